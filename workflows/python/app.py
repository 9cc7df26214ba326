"""A minimal Corral workflow in Python (componentize-py), implementing the `workflow` world.

It globs a few files, reads and greps them, starts one reviewer agent per file without blocking
(a fan-out collected with `agents.wait`), then asks one summariser with `agents.call`. It also
tries to open a TCP socket, which Corral must deny: the failure is caught and logged.

Build: see README.md in this folder.
"""

import json
import socket
import sys

# componentize-py snapshots the interpreter at build time and ships no stdlib files: a module first
# imported at run time is missing. `socket.create_connection` encodes the host with the `idna`
# codec, so import it now (without it the probe fails with `LookupError: unknown encoding: idna`
# before it reaches the network).
import encodings.idna  # noqa: F401

import wit_world
from wit_world.imports import agents, budget, progress, tools
from componentize_py_types import Err, Ok


def options(label=None, phase=None, model=None, tool_names=None, max_tokens=None):
    return agents.AgentOptions(
        label=label,
        phase=phase,
        model=model,
        effort=None,
        schema=None,
        tools=tool_names,
        max_tokens=max_tokens,
        max_turns=None,
        timeout_ms=None,
    )


def describe(error):
    """A tool or agent error variant as `kind: reason`."""
    return f"{type(error).__name__.split('_', 1)[-1]}: {getattr(error, 'value', error)}"


def try_network():
    """Corral grants no network: both probes must fail inside the guest, not trap the run."""
    outcomes = []
    try:  # name lookup (wasi:sockets/ip-name-lookup), then tcp create-socket + connect
        sock = socket.create_connection(("127.0.0.1", 9), timeout=1)
        sock.close()
        outcomes.append("create_connection: connected (network was NOT denied)")
    except Exception as error:  # an OSError subclass (gaierror, PermissionError, ...)
        outcomes.append(f"create_connection denied: {type(error).__name__}: {error}")
    try:  # a numeric address: no lookup, straight to wasi:sockets/tcp-create-socket
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.connect(("127.0.0.1", 9))
            outcomes.append("socket.connect: connected (network was NOT denied)")
        finally:
            sock.close()
    except Exception as error:
        outcomes.append(f"socket.connect denied: {type(error).__name__}: {error}")
    return "; ".join(outcomes)


class WitWorld(wit_world.WitWorld):
    def run(self, args_json: str) -> str:
        args = json.loads(args_json) if args_json else None
        args = args if isinstance(args, dict) else {}
        pattern = args.get("glob", "**/*.rs")
        max_files = int(args.get("maxFiles", 3))

        print(f"python workflow: glob={pattern!r} maxFiles={max_files}")
        network = try_network()
        progress.log(f"network: {network}")
        print(f"network: {network}", file=sys.stderr)

        progress.phase("Scan")
        try:
            files = tools.glob(pattern)[:max_files]
        except Err as error:
            raise Err(f"glob failed: {describe(error.value)}")
        try:
            hits = tools.grep("TODO|FIXME", tools.GrepOptions(glob=pattern, ignore_case=True, max_matches=20))
        except Err as error:
            hits = []
            progress.log(f"grep failed: {describe(error.value)}")
        progress.log(f"{len(files)} files, {len(hits)} TODO/FIXME hits")

        progress.phase("Review")
        started = {}
        for path in files:
            try:
                source = tools.read(path)
            except Err as error:
                progress.log(f"read {path}: {describe(error.value)}")
                continue
            prompt = f"Review {path} for bugs; answer in one paragraph.\n\n{source[:4000]}"
            try:
                call_id = agents.start(prompt, options(label=path, tool_names=["read", "grep"]))
            except Err as error:
                progress.log(f"start {path}: {describe(error.value)}")
                continue
            started[call_id] = path

        reviews = {}
        pending = list(started)
        while pending:
            for completion in agents.wait(pending):
                pending.remove(completion.id)
                path = started[completion.id]
                outcome = completion.outcome
                if isinstance(outcome, Ok):
                    reviews[path] = outcome.value.text
                else:
                    reviews[path] = None
                    progress.log(f"review {path}: {describe(outcome.value)}")

        progress.phase("Summary")
        summary = None
        if reviews:
            joined = "\n\n".join(f"{p}: {r}" for p, r in reviews.items() if r)
            try:
                summary = agents.call(f"Summarise these reviews:\n{joined}", options(label="summary", model="haiku")).text
            except Err as error:
                progress.log(f"summary: {describe(error.value)}")

        result = {
            "files": files,
            "todoHits": len(hits),
            "reviews": reviews,
            "summary": summary,
            "network": network,
            "budget": {"total": budget.total(), "spent": budget.spent(), "remaining": budget.remaining()},
        }
        print(f"python workflow: done, {len(reviews)} reviews")
        return json.dumps(result)
