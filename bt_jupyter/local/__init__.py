"""The embedded local service: Baseten's training REST API answered on this machine, with
jobs run as local processes (app.py assembles state.py and routes/; runner.py runs jobs)."""
