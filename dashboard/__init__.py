"""modelog.dashboard: the live Streamlit monitoring page.

* :mod:`modelog.dashboard.data` -- every query, as typed functions returning DataFrames;
* :mod:`modelog.dashboard.charts` -- the Altair charts built from them;
* :mod:`modelog.dashboard.launch` -- ``streamlit run`` command, env and runner;
* ``app.py`` -- the page itself (run by ``modelog dashboard``).
"""
