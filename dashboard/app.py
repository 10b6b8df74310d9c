"""The Dash application: a live operator view against the controller API and/or a run viewer.

With an API, the page needs a login (dashboard.auth): every browser session talks to the
controller with its own user's token, so one dashboard process serves many users.
"""

from __future__ import annotations

from dash import Dash, dcc, html

from dashboard.run_data import load_run

# a signed-out or expired session gets 401 from Dash's endpoints: send the browser to the login
EXPIRY_JS = """<script>(function(){const f=window.fetch;window.fetch=function(){return f.apply(this,arguments)
.then(function(r){if(r.status===401&&String(r.url).indexOf('/_dash')>=0){window.location='/login?expired=1';}
return r;});};})();</script>"""


def create_app(api_url: str | None = None, run_dirs=(), refresh_ms: int = 1000,
               session_ttl_s: float = 8 * 3600.0, sweep_dirs=()) -> Dash:
    """Build the app; `api_url` enables the live tab (behind a login), `run_dirs` the run viewer
    tab, `sweep_dirs` the sweep viewer tab."""
    app = Dash(__name__, title="gridtwin", suppress_callback_exceptions=True,
               update_title=None)
    tabs = []
    if api_url:
        from dashboard import auth, live_view

        store = auth.SessionStore(api_url, session_ttl_s)
        auth.install(app.server, store)
        app.sessions = store
        app.index_string = app.index_string.replace("{%metas%}", "{%metas%}" + EXPIRY_JS)
        tabs.append(dcc.Tab(label="Live", value="live", children=live_view.layout(refresh_ms)))
        live_view.register(app, store)
    runs = [load_run(d) for d in run_dirs]
    if runs:
        from dashboard import run_view

        tabs.append(dcc.Tab(label="Runs", value="runs", children=run_view.layout(runs)))
        run_view.register(app, runs)
    if sweep_dirs:
        from dashboard import sweep_view

        sweeps = [sweep_view.load_sweep(d) for d in sweep_dirs]
        tabs.append(dcc.Tab(label="Sweep", value="sweep", children=sweep_view.layout(sweeps)))
        sweep_view.register(app, sweeps)
    if not tabs:
        raise ValueError("dashboard needs --api URL, --run DIR and/or --sweep DIR")
    app.layout = html.Div([
        html.H1("gridtwin operator dashboard", style={"fontSize": "22px"}),
        dcc.Tabs(id="tabs", value=tabs[0].value, children=tabs),
    ], style={"fontFamily": "sans-serif", "margin": "10px 20px"})
    return app
