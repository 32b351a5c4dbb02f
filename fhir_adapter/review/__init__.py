"""The review workspace at `/review`: the people who decide pended requests (issue #15).

Server-rendered pages (Jinja2) for signed-in staff: the queue of pended requests, a request with
everything a reviewer needs, the decision form (through `ReviewerDecisions.decide_by_reviewer`, the
same recorder as `Task/$decide`) and the plan's numbers. htmx (vendored in static/) only makes
links and forms swap the page body; every page works without JavaScript.
"""
