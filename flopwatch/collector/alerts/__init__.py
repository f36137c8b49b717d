"""What the collector tells people: threshold alerts, silent nodes, chain forks.

events.py    the job threshold policy, the event kinds, describing and sending events
scopes.py    thresholds per run and per account window, presets, forecasts
liveness.py  nodes that went silent
forks.py     chain forks, counted and alerted once per key
webhook.py   the webhook sink (signed JSON, retries, from a background thread)
"""
