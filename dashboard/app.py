"""The dashboard app: the "Live monitoring" page, first of a multi-page app.

The other pages (Runs, Datasets, Registry, Lineage) live in
:mod:`modelog.dashboard.pages`, Retraining in :mod:`modelog.dashboard.retrain_page`;
``st.navigation`` lists them in the sidebar.

Run it with ``modelog dashboard`` (or ``python -m streamlit run app.py`` with
``MODELOG_*`` variables set). It only reads, through
:class:`modelog.store.reader.Reader`, and refreshes itself with
``st.fragment(run_every=...)``; all SQL lives in :mod:`modelog.dashboard.data`
and the charts in :mod:`modelog.dashboard.charts`.

With ``MODELOG_DASHBOARD_TOKEN`` set, :func:`token_gate` asks for the token
before any page renders; the pages' readers send ``MODELOG_QUERY_TOKEN`` to the
projector's query server.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd
import streamlit as st

from modelog.config import Settings, is_loopback, token_matches
from modelog.dashboard import charts, data, pages
from modelog.dashboard.anomaly_panel import anomaly_panel
from modelog.dashboard.quality_panel import quality_panel
from modelog.dashboard.retrain_page import retrain_page
from modelog.dashboard.rollout_page import rollout_page
from modelog.dashboard.text import code, plain
from modelog.dashboard.text import missing as _missing
from modelog.errors import ModelogError
from modelog.store.errors import NoDataError, StoreError
from modelog.store.reader import Reader

SEVERITY_STYLE = {  # colour of the severity text, Material icon of the expander
    "critical": ("red", ":material/error:"),
    "warning": ("orange", ":material/warning:"),
    "info": ("blue", ":material/info:"),
}
REFRESH_CHOICES = (1, 2, 5, 10, 30, 60)
MAX_IDS_SHOWN = 50
ALL_VERSIONS = "all versions"


# -- formatting -------------------------------------------------------------------
def _time(value: Any) -> str:
    if _missing(value):
        return "—"
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
    return f"{ts:%Y-%m-%d %H:%M:%S} UTC"


def _num(value: Any) -> str:
    return "—" if _missing(value) else f"{float(value):.4g}"


def _count(value: Any) -> str:
    return "—" if _missing(value) else f"{int(value):,}"


def _text(value: Any, default: str = "—") -> str:
    return default if _missing(value) or value == "" else str(value)


# -- sections ---------------------------------------------------------------------
def empty_state(settings: Settings, detail: str = "") -> None:
    """What to do when nothing was projected yet."""
    st.info(
        "**No data yet.** Start the platform with `modelog up` (broker, worker, projector "
        "and this dashboard), then send traffic with `modelog demo` in another terminal. "
        f"This page refreshes by itself and will show it.\n\nData directory: "
        f"`{settings.data_dir.resolve()}`"
        + (f"\n\n{detail}" if detail else ""),
        icon=":material/hourglass_empty:",
    )


def header(source: data.QuerySource, counts: pd.Series) -> None:
    """Header metrics, and the dead-letter warning when records were dead-lettered."""
    cols = st.columns(5)
    cols[0].metric("Events projected", _count(counts["events"]),
                   help=f"last event {_time(counts['last_event'])}")
    cols[1].metric("Predictions", _count(counts["predictions"]))
    cols[2].metric("Labels", _count(counts["labels"]))
    open_alerts = int(counts["open_alerts"])
    cols[3].metric("Open alerts", f"{open_alerts:,}",
                   help="DriftDetected not followed by a DriftResolved")
    dead = int(counts["dead_letters"] or 0)
    cols[4].metric("Dead-lettered", f"{dead:,}",
                   delta="needs attention" if dead else None, delta_color="inverse",
                   delta_arrow="off" if dead else "auto",
                   help="records that could not be decoded or validated")
    if dead:
        with st.expander(f"{dead} record(s) went to the dead-letter topic — latest reasons",
                         icon=":material/report:"):
            reasons = data.dead_letter_reasons(source, limit=10)
            st.dataframe(reasons, hide_index=True)
            st.caption("The records are kept unchanged on the dead-letter topic; fix the "
                       "producer, then replay them from there.")


def select_model(models: pd.DataFrame) -> tuple[str | None, int | None]:
    """Model and version selectors (the most recently active model first)."""
    if models.empty:
        return None, None
    latest = models.sort_values("last_seen", ascending=False, na_position="last")
    names = list(dict.fromkeys([*latest["model"], *models["model"]]))
    left, right = st.columns([3, 2])
    model = left.selectbox("Model", names, key="model")
    versions = sorted(int(v) for v in models.loc[models["model"] == model, "model_version"]
                      if not _missing(v))
    chosen = right.selectbox("Version", [ALL_VERSIONS, *versions], key=f"version:{model}",
                             format_func=lambda v: v if v == ALL_VERSIONS else f"v{v}")
    return model, chosen if isinstance(chosen, int) else None


def alert_label(alert: pd.Series) -> str:
    """One-line summary of an alert (expander title, Streamlit markdown)."""
    severity = _text(alert["severity"], "info")
    colour = SEVERITY_STYLE.get(severity, ("gray", ""))[0]
    version = "" if _missing(alert["model_version"]) else f" v{int(alert['model_version'])}"
    parts = [f":{colour}[**{severity.upper()}**]", str(alert["type"]),
             plain(alert["model"], "") + version, plain(alert["detector"], "")]
    if not _missing(alert["feature"]):
        parts.append(f"feature {plain(alert['feature'], '')}")
    if not _missing(alert["resolved_at"]):
        parts.append(":green[resolved]")
    summary = " · ".join(parts)
    message = plain(alert["message"], "")
    return f"{summary}{f' — {message}' if message else ''} · {_time(alert['time'])}"


def alert_evidence(alert: pd.Series) -> None:
    """The evidence behind one alert (inside its expander)."""
    statistic, threshold = alert["statistic"], alert["threshold"]
    relation = ""
    if not _missing(statistic) and not _missing(threshold):
        relation = " (above)" if float(statistic) > float(threshold) else " (not above)"
    st.markdown(f"**Statistic** `{_num(statistic)}` vs **threshold** `{_num(threshold)}`"
                f"{relation} · kind {code(alert['kind'])}")
    st.markdown(f"**Window** {_time(alert['window_start'])} → {_time(alert['window_end'])}, "
                f"{_count(alert['window_size'])} observations")
    if not _missing(alert["resolved_at"]):
        st.success(f"Resolved at {_time(alert['resolved_at'])}")
    ids = list(alert["prediction_ids"]) if alert["prediction_ids"] is not None else []
    if ids:
        more = f" (and {len(ids) - MAX_IDS_SHOWN} more)" if len(ids) > MAX_IDS_SHOWN else ""
        st.markdown(f"**Prediction ids** ({len(ids)}){more}")
        st.code("\n".join(ids[:MAX_IDS_SHOWN]), language=None)
    if not _missing(alert["params"]):
        st.markdown("**Detector parameters**")
        st.json(json.loads(str(alert["params"])), expanded=True)
    st.caption(f"event {code(alert['event_id'])}"
               + ("" if _missing(alert["detected_id"])
                  else f" · resolves {code(alert['detected_id'])}"))


def alert_feed(source: data.QuerySource, model: str | None, version: int | None,
               limit: int) -> None:
    """The live alert feed, newest first."""
    st.subheader("Alerts")
    only = st.toggle("Only the selected model", value=False, key="feed_only_model")
    feed = data.alert_feed(source, model if only else None, version if only else None,
                           limit=limit)
    if feed.empty:
        st.caption("No alerts yet. Drift and anomaly monitors publish here as they fire.")
        return
    for _, alert in feed.iterrows():
        icon = SEVERITY_STYLE.get(_text(alert["severity"], "info"), ("", None))[1]
        with st.expander(alert_label(alert), key=f"alert:{alert['event_id']}", icon=icon):
            alert_evidence(alert)


def live_metric_caption(stats: pd.DataFrame) -> None:
    """The latest rolling live metric of each version (accuracy and F1, or MAE)."""
    if stats.empty:
        return
    parts = []
    for version, rows in stats.groupby("model_version", sort=True):
        last = rows.iloc[-1]
        if not _missing(last.get("rolling_accuracy")):
            parts.append(f"v{version}: accuracy **{last['rolling_accuracy']:.3f}**, "
                         f"F1 **{_num(last.get('rolling_f1'))}**")
        elif not _missing(last.get("rolling_mae")):
            parts.append(f"v{version}: MAE **{last['rolling_mae']:.4g}**")
    if parts:
        st.markdown("**Live metric** (rolling, last labelled predictions) — " + "; ".join(parts))


def model_panel(source: data.QuerySource, model: str, version: int | None,
                window: int) -> None:
    """Error rate and anomaly charts of one model, with its aliases."""
    known = data.aliases(source, model)
    if known.empty:
        st.caption(f"**{plain(model)}**: no alias set yet")
    else:
        st.caption(f"**{plain(model)}** aliases: " + ", ".join(
            f"{code(row.alias)} → v{row.model_version}" for row in known.itertuples()))
    windows = data.error_rate(source, model, version, window=window)
    stats = data.monitor_series(source, model, version)
    starts = [s.min() for s in (windows.get("start"), stats.get("time"))
              if s is not None and not s.empty]
    since = min(starts) if starts else None
    drift = data.alert_feed(source, model, version, since=since, limit=200,
                            types=("DriftDetected", "DriftResolved"))
    live_metric_caption(stats)
    st.markdown(f"**Error rate** — windows of {window} labelled predictions"
                " and the monitor's rolling error; rules mark drift alerts")
    if windows.empty and stats.empty:
        st.caption("No labelled predictions yet.")
    else:
        st.altair_chart(charts.error_rate_chart(windows, stats, drift), width="stretch")
    anomalies = data.alert_feed(source, model, version, since=since, limit=200,
                                types=("AnomalyDetected",))
    st.markdown("**Anomaly scores** — per monitor window; rules mark anomaly alerts")
    if stats.empty or stats[["anomaly_score_mean", "anomaly_score_max"]].isna().all().all():
        st.caption("No anomaly scores reported yet.")
    else:
        st.altair_chart(charts.anomaly_chart(stats, anomalies), width="stretch")


def drift_panel(source: data.QuerySource, model: str, version: int | None) -> None:
    """Per-feature drift against thresholds, the prediction distribution, the learning curve."""
    drift = data.feature_drift(source, model, version)
    st.subheader("Feature drift")
    if drift.empty:
        st.caption("No drift statistics reported yet: the worker reports them every "
                   "`stats_every` predictions once a reference exists (the training "
                   "profile, or the first `reference_size` predictions).")
    else:
        latest = data.latest_feature_drift(drift)
        drifting = latest[latest["status"] == "drifting"]
        st.markdown(
            f"**{len(drifting)}** of {latest['feature'].nunique()} monitored features "
            "drifting now" + (": " + ", ".join(code(f) for f in
                                               dict.fromkeys(drifting["feature"]))
                              if not drifting.empty else "")
            + " — statistic per check (dashed: threshold; red: above it)")
        markers = data.alert_feed(source, model, version, limit=200, types=("DriftDetected",))
        st.altair_chart(charts.feature_drift_chart(drift, markers), width="stretch")
        st.dataframe(latest, hide_index=True, width="stretch", column_config={
            "statistic": st.column_config.NumberColumn(format="%.4f"),
            "threshold": st.column_config.NumberColumn(format="%.4f"),
            "time": st.column_config.DatetimeColumn("checked at", format="HH:mm:ss"),
        })
    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Prediction distribution")
        dist = data.prediction_distribution(source, model, version)
        if dist.empty:
            st.caption("No predictions yet.")
        else:
            st.caption("Share of each output: the first predictions of the selection "
                       "beside the latest ones (prediction drift needs no labels).")
            st.altair_chart(charts.prediction_distribution_chart(dist), width="stretch")
    with right:
        st.subheader("Online learning curve")
        curve = data.learning_curve(source, model)
        if curve.empty:
            st.caption(f"No online learner for **{model}**: register a River model with "
                       "`online=True` and the worker trains it on every labelled prediction.")
        else:
            st.caption("Prequential (test-then-train) metrics of the online versions, by "
                       "labels learned.")
            st.altair_chart(charts.learning_curve_chart(curve), width="stretch")


def live(settings: Settings, window: int, limit: int) -> None:
    """Everything that refreshes: metrics, feed, charts."""
    source = Reader(settings, timeout=10.0, as_of=st.session_state.get(AS_OF_KEY))
    try:
        counts = data.overview(source)
        if data.is_empty(counts):
            empty_state(settings)
            return
        header(source, counts.iloc[0])
        model, version = select_model(data.models(source))
        feed_col, chart_col = st.columns([2, 3], gap="large")
        with feed_col:
            alert_feed(source, model, version, limit)
        with chart_col:
            if model is None:
                st.caption("No model has made predictions yet.")
            else:
                model_panel(source, model, version, window)
        if model is not None:
            drift_panel(source, model, version)
            quality_panel(source, model, version)
            anomaly_panel(source, model, version)
    except NoDataError as exc:
        empty_state(settings, str(exc))
    except StoreError as exc:
        st.error(f"Could not read the projection: {exc}\n\nCheck that `modelog project` "
                 "runs for this data directory (or that MODELOG_QUERY_URL is right); the page "
                 "retries at the next refresh.", icon=":material/error:")
    st.caption(f"Refreshed {dt.datetime.now(dt.UTC):%H:%M:%S} UTC · "
               f"data `{settings.data_dir.resolve()}`")


def main() -> None:
    """Build the live monitoring page."""
    st.set_page_config(page_title="modelog · Live monitoring",
                       page_icon=":material/monitoring:", layout="wide")
    st.title("Live monitoring")
    try:
        settings = Settings.from_env()
    except ModelogError as exc:
        st.error(f"Invalid configuration: {exc}")
        st.stop()
        return
    with st.sidebar:
        st.header("Refresh")
        every = st.select_slider("Refresh every", REFRESH_CHOICES, value=2,
                                 format_func=lambda s: f"{s} s", key="refresh_every")
        paused = st.toggle("Pause", value=False, key="paused",
                           help="Stop refreshing (e.g. to read an alert).")
        st.header("Display")
        window = int(st.number_input("Error-rate window (labelled predictions)", 10, 100_000,
                                     value=200, step=50, key="window"))
        limit = int(st.number_input("Alerts shown", 1, 500, value=25, step=5, key="limit"))
        st.caption("Paused." if paused else f"Refreshing every {every} s.")
    st.fragment(run_every=None if paused else float(every))(live)(settings, window, limit)


TOKEN_KEY = "modelog_dashboard_token"  # session state: the token the visitor gave
AS_OF_KEY = "modelog_as_of"  # session state: the "as of" time (ISO, UTC) every page reads at


def as_of_control() -> None:
    """The sidebar's "As of" field, on every page: empty means live; a date or time shows
    every page -- alerts, metrics, drift, runs, registry -- as it stood then (event time),
    computed from the ledger (:mod:`modelog.store.as_of`)."""
    from modelog.store.as_of import parse_as_of

    with st.sidebar:
        text = st.text_input("As of (UTC)", key="as_of_text", placeholder="live",
                             help="Empty: live. A date or time, e.g. 2026-03-03 or "
                                  "2026-03-03 14:00 (UTC): the state at that time.")
        st.session_state[AS_OF_KEY] = None
        if text.strip():
            try:
                st.session_state[AS_OF_KEY] = parse_as_of(text).isoformat()
                st.caption(f"Showing the state as of {st.session_state[AS_OF_KEY]}.")
            except StoreError as exc:
                st.error(str(exc))


def token_gate() -> None:
    """Ask for ``MODELOG_DASHBOARD_TOKEN`` before any page renders; stop until it is given.

    The token comes from a password field or ``?token=`` in the URL (then removed
    from the address bar), is compared in constant time and kept in the session.
    Without a token configured every page renders, except when Streamlit serves an
    explicit address beyond loopback (the launcher refuses that already).
    """
    try:
        expected = Settings.from_env().dashboard_token
    except ModelogError as exc:
        st.error(f"Invalid configuration: {exc}")
        st.stop()
        return
    if not expected:
        address = str(st.get_option("server.address") or "")
        if address and not is_loopback(address):
            st.error(f"This dashboard serves {address}, beyond loopback, without a token: "
                     "set MODELOG_DASHBOARD_TOKEN and restart it.")
            st.stop()
        return
    if token_matches(st.session_state.get(TOKEN_KEY), expected):
        return
    wrong = False
    if "token" in st.query_params:
        given = st.query_params["token"]
        del st.query_params["token"]
        if token_matches(given, expected):
            st.session_state[TOKEN_KEY] = given
            return
        wrong = True
    gate = st.empty()
    with gate.container():
        st.title("modelog")
        with st.form("token_form", clear_on_submit=True):
            given = st.text_input("Dashboard token", type="password", key="token_input",
                                  help="The MODELOG_DASHBOARD_TOKEN of this deployment.")
            submitted = st.form_submit_button("Open the dashboard")
        if submitted and token_matches(given, expected):
            st.session_state[TOKEN_KEY] = given
            gate.empty()
            return
        if submitted or wrong:
            st.error("Wrong token: ask the operator for MODELOG_DASHBOARD_TOKEN.",
                     icon=":material/lock:")
    st.stop()

token_gate()
as_of_control()
st.navigation([
    st.Page(main, title="Live monitoring", icon=":material/monitoring:", url_path="live",
            default=True),
    *pages.lifecycle_pages(),
    st.Page(retrain_page, title="Retraining", icon=":material/model_training:",
            url_path="retraining"),
    st.Page(rollout_page, title="Rollout", icon=":material/compare_arrows:",
            url_path="rollout"),
]).run()
