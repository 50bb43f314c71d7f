"""Start the Streamlit dashboard as a subprocess, configured only by flags and env vars.

No ``.streamlit/config.toml`` is needed or read for our settings: every Streamlit
option is a command-line flag (flags win over any config file in the working
directory), and modelog's own settings travel as ``MODELOG_*`` variables, which
the page reads with :meth:`modelog.config.Settings.from_env` (they are written by
:func:`modelog.config.env_for`, from the one table :data:`modelog.config.ENV_VARS`).
An address beyond loopback needs ``MODELOG_DASHBOARD_TOKEN`` (:func:`check_address`).

Examples
--------
>>> from pathlib import Path
>>> from modelog.config import Settings
>>> s = Settings(data_dir=Path("/srv/modelog"), topic_prefix="acme.")
>>> cmd = dashboard_command(s, port=8600)
>>> cmd[1:4], cmd[4].endswith("app.py")
(['-m', 'streamlit', 'run'], True)
>>> cmd[cmd.index("--server.port") + 1]
'8600'
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from modelog.config import Settings, env_for, is_loopback
from modelog.errors import ConfigurationError

__all__ = ["APP_PATH", "STREAMLIT_FLAGS", "check_address", "dashboard_command", "run_dashboard"]

APP_PATH: Path = Path(__file__).resolve().with_name("app.py")
"""The Streamlit script of the dashboard."""

STREAMLIT_FLAGS: dict[str, str] = {
    "server.headless": "true",
    "browser.gatherUsageStats": "false",
    "server.fileWatcherType": "none",
    "server.runOnSave": "false",
    "global.developmentMode": "false",
    "client.toolbarMode": "minimal",
    "theme.base": "light",
    "theme.primaryColor": "#d62728",
}
"""Streamlit options passed as flags (besides port and address)."""


def dashboard_command(
    settings: Settings, port: int = 8501, address: str = "127.0.0.1"
) -> list[str]:
    """The ``python -m streamlit run app.py ...`` command serving the dashboard.

    ``settings`` do not appear in the command (they go through
    :func:`modelog.config.env_for`); the parameter keeps the launcher's signature
    uniform and lets a future setting choose flags.
    """
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"port={port} is not a TCP port (0-65535); pick a free one.")
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_PATH),
           "--server.port", str(port), "--server.address", address]
    for name, value in STREAMLIT_FLAGS.items():
        cmd += [f"--{name}", value]
    return cmd


def check_address(settings: Settings, address: str) -> None:
    """Refuse to serve ``address`` beyond loopback without ``MODELOG_DASHBOARD_TOKEN``.

    Examples
    --------
    >>> check_address(Settings(), "127.0.0.1")
    >>> check_address(Settings(dashboard_token="s3cret"), "0.0.0.0")
    >>> check_address(Settings(), "0.0.0.0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    modelog.errors.ConfigurationError: the dashboard would serve 0.0.0.0, beyond loopback, ...
    """
    if not settings.dashboard_token and not is_loopback(address):
        raise ConfigurationError(
            f"the dashboard would serve {address}, beyond loopback, without a token: set "
            "MODELOG_DASHBOARD_TOKEN to a long random string (e.g. `openssl rand -hex 32`); "
            "visitors then enter it (or open the URL with ?token=...). Or serve loopback "
            "(--address 127.0.0.1)."
        )


def run_dashboard(settings: Settings, port: int = 8501, address: str = "127.0.0.1") -> int:
    """Serve the dashboard until it exits or Ctrl-C/SIGTERM; return its exit code.

    Raises
    ------
    ConfigurationError
        ``address`` is beyond loopback and ``MODELOG_DASHBOARD_TOKEN`` is not set.
    """
    check_address(settings, address)
    env = {**os.environ, **env_for(settings)}
    proc = subprocess.Popen(dashboard_command(settings, port, address), env=env)

    def forward(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, forward) if main else None
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # Streamlit got the same SIGINT; wait for it to stop
                continue
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
