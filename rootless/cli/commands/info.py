from __future__ import annotations

import click

from rootless.cli.context import AppContext, pass_app


@click.command(help="Show the host, storage and helper facts rl works with.")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_app
def info(app: AppContext, fmt: str) -> None:
    from rootless.engine import info as engine

    data = engine.gather(app.dirs, app.settings["storage.driver"], app.settings["network.default"])
    if fmt == "json":
        from rootless.cli.output import print_json

        print_json(data)
        return
    host, store, cg = data["host"], data["store"], data["cgroups"]

    def ranges(rs: list[list[int]]) -> str:
        return ", ".join(f"{s}-{s + c - 1} ({c})" for s, c in rs) or "none (single-ID mapping)"

    rows = [
        ("rl version", data["rl"]["version"]),
        ("kernel", f"{host['kernel']} ({host['arch']})"),
        ("cgroup version", host["cgroupVersion"]),
        ("cgroup subtree", cg["delegated"] or f"none: {cg.get('problem') or 'not delegated'}"),
        ("cgroup controllers", " ".join(cg["controllers"]) or "none"),
        ("user", f"{host['user']['name']} (uid {host['user']['uid']}, gid {host['user']['gid']})"),
        ("subuid ranges", ranges(host["subuid"])),
        ("subgid ranges", ranges(host["subgid"])),
        ("storage root", store["root"]),
        ("runtime dir", f"{store['runroot']} ({store['runrootReason']})"),
        ("storage driver", f"{store['driver']} (configured: {store['driverConfigured']})"),
    ]
    for name, problem in store["drivers"].items():
        rows.append((f"  {name}", problem))
    ns = data["userNamespace"]
    if ns["running"]:
        mode = "single-ID mapping" if ns["singleId"] else "; ".join(ns["uidMap"])
        rows.append(("user namespace", f"pause process {ns['pausePid']}, uid map: {mode}"))
    else:
        rows.append(("user namespace", "not started (the first command that needs it starts it)"))
    net = data["network"]
    shared = net["rootlessNetns"]
    rows.append(("default network", net["default"]))
    rows.append(("rootless netns", f"{shared['helper']} {shared['helperPid']} (shared by the bridge networks)"
                 if shared["running"] else "not started (the first container on a bridge network starts it)"))
    for name, h in data["helpers"].items():
        rows.append((f"helper {name}", h["path"] if h["usable"] else f"{h['path'] or '-'}: {h['problem']}"))
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        click.echo(f"{k.ljust(width)}  {v}")
