"""`rl network create|ls|inspect|rm|connect|disconnect|prune` and `rl port CONTAINER [PORT]`.

User-defined networks live in one rootless network namespace per user (rootless.network.bridge);
the records are plain JSON files (rootless.network.networks). Commands that touch namespaces join
rl's user namespace first; listing and inspecting do not need to.
"""

from __future__ import annotations

from typing import Any

import click

from rootless.cli.context import AppContext, pass_app
from rootless.errors import NotFoundError, UsageError


def _env(app: AppContext, enter: bool = False) -> Any:
    from rootless.cli.commands.run import engine_env

    env = engine_env(app)
    if enter:
        from rootless.runtime import pause

        pause.enter(env.runroot)
    return env


def _labels(items: tuple[str, ...]) -> dict[str, str]:
    result = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid --label {item!r}", "use --label KEY=VALUE")
        result[key] = value
    return result


def _format(fmt: str, rows: list[dict[str, Any]]) -> None:
    from rootless.cli.gotemplate import render_rows

    for line in render_rows(fmt, rows):
        click.echo(line)


@click.group(help="Manage user-defined networks: containers on one network reach each other by name.")
def network() -> None:
    pass


@network.command(help="Create a network (a bridge in your rootless network namespace).")
@click.option("-d", "--driver", default="bridge", show_default=True, help="Only 'bridge' is supported.")
@click.option("--subnet", metavar="CIDR", help="IPv4 subnet, e.g. 10.90.0.0/24 (default: the next free 10.89.N.0/24).")
@click.option("--gateway", metavar="IP", help="The bridge's address (default: the subnet's first).")
@click.option("--internal", is_flag=True, help="No way out: only the containers on the network reach each other.")
@click.option("--label", multiple=True, metavar="KEY=VALUE", help="Set a label on the network.")
@click.argument("name")
@pass_app
def create(app: AppContext, driver: str, subnet: str | None, gateway: str | None, internal: bool,
           label: tuple[str, ...], name: str) -> None:
    from rootless.engine.network import network_store

    if driver != "bridge":
        raise UsageError(f"unsupported network driver {driver!r}", "use --driver bridge (the default)")
    record = network_store(_env(app)).create(name, subnet=subnet, gateway=gateway, labels=_labels(label),
                                             internal=internal)
    click.echo(record.name)


@network.command("ls", help="List networks.")
@click.option("-q", "--quiet", is_flag=True, help="Only the names.")
@click.option("--format", "fmt", metavar="TEMPLATE", help="A Go template, e.g. '{{.Name}} {{.Subnet}}'.")
@click.option("--no-trunc", is_flag=True, help="Full network IDs.")
@pass_app
def ls(app: AppContext, quiet: bool, fmt: str | None, no_trunc: bool) -> None:
    from rootless.cli.output import print_table
    from rootless.engine.network import network_store

    records = network_store(_env(app)).records()
    if quiet:
        for r in records:
            click.echo(r.name)
        return
    rows = [{"ID": r.id if no_trunc else r.id[:12], "Name": r.name, "Driver": r.driver, "Scope": "local",
             "Subnet": r.subnet, "Gateway": r.gateway, "Bridge": r.bridge, "Internal": r.internal}
            for r in records]
    if fmt:
        _format(fmt, rows)
        return
    print_table(["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"],
                [[r["ID"], r["Name"], r["Driver"], r["Scope"], r["Subnet"]] for r in rows])


network.add_command(ls, "list")


def _inspect_data(env: Any, ref: str) -> dict[str, Any]:
    from rootless.engine.network import attached_containers, network_store

    record = network_store(env).get(ref)
    data = record.inspect()
    containers = {}
    for c, _, state in attached_containers(env):
        entry = state.networks.get(record.name)
        if entry:
            containers[c.id] = {"Name": c.name, "MacAddress": entry.get("MacAddress", ""),
                                "IPv4Address": f"{entry['IPAddress']}/{entry.get('IPPrefixLen', 24)}",
                                "IPv6Address": ""}
    data["Containers"] = containers
    return data


@network.command(help="Show networks as JSON (docker's shape), or through a Go template.")
@click.option("-f", "--format", "fmt", metavar="TEMPLATE", help="A Go template, e.g. '{{.IPAM}}'.")
@click.argument("names", nargs=-1, required=True)
@pass_app
def inspect(app: AppContext, fmt: str | None, names: tuple[str, ...]) -> None:
    from rootless.cli.output import print_json

    env = _env(app, enter=True)  # the namespace files of running containers are mounted there
    data = [_inspect_data(env, n) for n in names]
    if fmt:
        _format(fmt, data)
    else:
        print_json(data)


@network.command("rm", help="Remove networks no container uses.")
@click.option("-f", "--force", is_flag=True, help="Disconnect the containers on it first.")
@click.argument("names", nargs=-1, required=True)
@pass_app
def rm(app: AppContext, force: bool, names: tuple[str, ...]) -> None:
    from rootless.engine.network import remove_networks

    for name in remove_networks(_env(app, enter=True), list(names), force=force):
        click.echo(name)


network.add_command(rm, "remove")


@network.command(help="Remove every network no container uses, and the rootless network namespace when idle.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def prune(app: AppContext, force: bool) -> None:
    from rootless.engine.network import prune_networks

    if not force and not click.confirm("remove all networks not used by at least one container?", default=False):
        return
    for name in prune_networks(_env(app, enter=True)):
        click.echo(name)


@network.command(help="Connect a running container to a network (one more interface, eth1...).")
@click.option("--alias", multiple=True, metavar="NAME", help="Another name the container has on this network.")
@click.argument("network_name", metavar="NETWORK")
@click.argument("container")
@pass_app
def connect(app: AppContext, alias: tuple[str, ...], network_name: str, container: str) -> None:
    from rootless.engine.network import connect as engine_connect

    engine_connect(_env(app, enter=True), network_name, container, list(alias))


@network.command(help="Disconnect a container from a network (its interface there goes away).")
@click.option("-f", "--force", is_flag=True, hidden=True)
@click.argument("network_name", metavar="NETWORK")
@click.argument("container")
@pass_app
def disconnect(app: AppContext, force: bool, network_name: str, container: str) -> None:
    from rootless.engine.network import disconnect as engine_disconnect

    engine_disconnect(_env(app, enter=True), network_name, container)


@network.command(help="Exit 0 when the network exists, 1 when it does not.")
@click.argument("name")
@pass_app
def exists(app: AppContext, name: str) -> int:
    from rootless.engine.network import network_store

    try:
        network_store(_env(app)).get(name)
    except NotFoundError:
        return 1
    return 0


@click.command(help="List a container's published ports, or the host address of one (PORT[/PROTO]).")
@click.argument("container")
@click.argument("private", metavar="[PORT[/PROTO]]", required=False)
@pass_app
def port(app: AppContext, container: str, private: str | None) -> int:
    from rootless.engine.network import load_state
    from rootless.network.ports import port_lines
    from rootless.state.containers import ContainerStore

    env = _env(app)
    record = ContainerStore(env.storage).get(container)
    state = load_state(env, record.id) if record.running else None
    mappings = state.ports if state else []
    lines = port_lines(mappings, private)
    if private:
        if not lines:
            key = private if "/" in private else f"{private}/tcp"
            raise NotFoundError(f"no public port '{key}' published for {record.name}",
                                "see 'rl port " + record.name + "'")
        for m in [m for m in mappings if str(m) in lines]:
            ip = f"[{m.host_ip}]" if ":" in m.host_ip else m.display_ip
            click.echo(f"{ip}:{m.host_port}")
        return 0
    for line in lines:
        click.echo(line)
    return 0
