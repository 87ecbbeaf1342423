"""Whether the bombs of scripts/bench bombs did their work: a bomb that
was answered "busy", timed out or failed for another reason tested
nothing, and a bench whose bombs never rendered must not pass. Pure
functions of what the bomb threads recorded."""


def bomb_outcome(kind, status, head):
    """What one bomb request came to: "rendered", "budget" (the API's 422
    naming the render budget), "failed render" (a provisioning fetch the
    server could not render: which limit, its phone's history says), or
    "unexpected <status>" (busy, a timeout, anything else: the bomb did
    not do its work)."""
    if kind in ("validate", "preview"):
        if status == "200":
            return "rendered"
        if status == "422" and b"budget" in head:
            return "budget"
    elif kind == "stored-http":
        if status in ("200", "500"):
            return "rendered" if status == "200" else "failed render"
    elif status in ("ok", "tftp error 0: internal error"):
        return "rendered" if status == "ok" else "failed render"
    return "unexpected " + status


def bomb_problems(report, stored, budget_in_history):
    """Why the bombs did not do their work, if they did not. `report` is
    `Bombs.report()`; `budget_in_history`: protocol -> whether the stored
    bomb's phone has a fetch that failed for its render budget."""
    problems = []
    for kind in ("validate", "preview"):
        b = report[kind]
        wrong = {o: n for o, n in b["outcomes"].items() if o not in ("rendered", "budget")}
        if not b["count"]:
            problems.append("%s: no bomb sent" % kind)
        elif wrong:
            problems.append("%s: %s" % (kind, wrong))
    if not stored["stored"]:
        if not any(a.get("budget") for a in stored["attempts"]):
            problems.append("the stored bomb was neither saved nor refused for its budget: %s" % stored.get("note"))
        return problems
    for kind, protocol in (("stored-tftp", "tftp"), ("stored-http", "http")):
        b = report[kind]
        wrong = {o: n for o, n in b["outcomes"].items() if o != "failed render"}
        if not b["count"]:
            problems.append("%s: the stored bomb was never fetched" % kind)
        elif wrong:
            problems.append("%s: %s" % (kind, wrong))
        if not budget_in_history.get(protocol):
            problems.append("%s: no fetch in its phone's history failed for the render budget" % kind)
    return problems
