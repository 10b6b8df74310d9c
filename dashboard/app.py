"""The Dash application: a live operator view against the controller API and/or a run viewer."""

from __future__ import annotations

from dash import Dash, dcc, html

from dashboard.run_data import load_run


def create_app(api_url: str | None = None, token: str | None = None, run_dirs=(),
               refresh_ms: int = 1000) -> Dash:
    """Build the app; `api_url` enables the live tab, `run_dirs` the run viewer tab."""
    app = Dash(__name__, title="gridtwin", suppress_callback_exceptions=True,
               update_title=None)
    tabs = []
    if api_url:
        from dashboard import live_view
        from dashboard.api_client import ApiClient

        client = ApiClient(api_url, token)
        tabs.append(dcc.Tab(label="Live", value="live", children=live_view.layout(client, refresh_ms)))
        live_view.register(app, client)
    runs = [load_run(d) for d in run_dirs]
    if runs:
        from dashboard import run_view

        tabs.append(dcc.Tab(label="Runs", value="runs", children=run_view.layout(runs)))
        run_view.register(app, runs)
    if not tabs:
        raise ValueError("dashboard needs --api URL and/or --run DIR")
    app.layout = html.Div([
        html.H1("gridtwin operator dashboard", style={"fontSize": "22px"}),
        dcc.Tabs(id="tabs", value=tabs[0].value, children=tabs),
    ], style={"fontFamily": "sans-serif", "margin": "10px 20px"})
    return app
