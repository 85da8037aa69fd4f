"""The `voxray` command: serve, demo, agent, schema."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time


def _serve(args: argparse.Namespace, then=None) -> None:
    from voxray.cluster.local import deploy, shutdown
    from voxray.cluster.ray_start import dashboard_url, eprint, start_ray
    from voxray.config import VoxrayConfig

    detached = False
    config = VoxrayConfig.load(args.config)
    if args.port:
        config.serve.port = args.port
    if args.host:
        config.serve.host = args.host
    eprint("voxray: loading (first start takes a minute while models load)")
    start_ray(args.address, num_cpus=args.num_cpus, log=eprint, ingress_proxy=config.serve.proxy)
    try:
        deploy(config, log=eprint, timeout_s=args.timeout)
        dash = dashboard_url()
        if dash:
            eprint(f"Ray dashboard: {dash}")
        if args.detach:
            if not (args.address or os.environ.get("RAY_ADDRESS")):
                raise SystemExit("--detach needs an existing cluster (--address or RAY_ADDRESS)")
            eprint("voxray: deployed; Serve keeps it running on the cluster")
            detached = True
            return
        if then is not None:
            then(config)
            if args.exit:
                return
        eprint("voxray: serving; Ctrl-C to stop")
        stop = False

        def on_signal(*_):
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stop:
            time.sleep(0.5)
    finally:
        if not detached:
            eprint("voxray: shutting down")
            shutdown()


def _demo(config) -> None:
    from voxray.agents import demo
    from voxray.speech import conversation, write_wav

    url = f"ws://{config.serve.host}:{config.serve.port}/call"
    print("demo: making the caller's voice (Piper, offline)", file=sys.stderr, flush=True)
    pcm = conversation(["Hello, my name is Alice and I would like a cup of coffee.", "Goodbye."], gap_s=5.0)
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "caller.wav")
        write_wav(wav, pcm)
        print(f"demo: calling {url} (the demo agent greets, echoes, and hangs up on goodbye)", flush=True)
        asyncio.run(demo.run(url, caller_wav=wav))


def _agent(args: argparse.Namespace) -> None:
    from voxray.agents.llm.playbook import load_playbook
    from voxray.agents.llm.runner import client_for, run_agent

    playbook = load_playbook(args.playbook)
    client = client_for(playbook, base_url=args.base_url, model=args.model, api_key=args.api_key)
    asyncio.run(run_agent(playbook, args.url, client=client, caller=args.caller, callee=args.callee,
                          accept=args.accept, caller_wav=args.caller_wav, summary=not args.no_summary,
                          timeout_s=args.timeout))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="voxray", description="voice-agent cluster on Ray")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, help_text in (("serve", "start Ray (embedded unless --address) and serve the app"),
                            ("demo", "serve, then hold a demo conversation with the demo agent")):
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("--config", help="JSON or TOML config file (also VOXRAY_CONFIG)")
        sp.add_argument("--address", help="join this Ray cluster instead of starting one (also RAY_ADDRESS)")
        sp.add_argument("--host", help="bind address for the HTTP/WebSocket ingress")
        sp.add_argument("--port", type=int, help="port for the HTTP/WebSocket ingress (default 8000)")
        sp.add_argument("--num-cpus", type=int, help="CPUs for an embedded Ray")
        sp.add_argument("--exit", action="store_true", help="demo: stop after the conversation")
        sp.add_argument("--detach", action="store_true",
                        help="with --address: deploy and return, leaving the app on the cluster")
        sp.add_argument("--timeout", type=float, default=600.0,
                        help="seconds the deploy may take before it fails (replicas that need nodes "
                             "not joined yet are not waited for)")
    sp = sub.add_parser("agent", help="run the LLM agent on one call (a playbook and any OpenAI-compatible model)")
    sp.add_argument("--playbook", required=True, help="Markdown playbook: YAML header + system prompt")
    sp.add_argument("--url", default="ws://127.0.0.1:8000/call", help="the call's WebSocket (/call, /call/sip?id=...)")
    sp.add_argument("--base-url", help="chat completions base URL (default: the playbook's llm.baseUrl, "
                                       "OPENAI_BASE_URL, or OpenAI's)")
    sp.add_argument("--model", help="model name (default: the playbook's llm.model or OPENAI_MODEL)")
    sp.add_argument("--api-key", help="API key (default: the playbook's llm.apiKey or OPENAI_API_KEY)")
    sp.add_argument("--caller", help="invite option caller")
    sp.add_argument("--callee", help="invite option callee")
    sp.add_argument("--accept", action="store_true", help="answer an inbound call (accept) instead of invite")
    sp.add_argument("--caller-wav", help="/call only: 16 kHz mono WAV streamed in as the caller's voice")
    sp.add_argument("--no-summary", action="store_true", help="skip the post-call summary")
    sp.add_argument("--timeout", type=float, help="hang up after this many seconds")
    sp = sub.add_parser("schema", help="print the protocol's JSON Schema")
    sp.add_argument("-o", "--output", help="write to a file instead of stdout")
    args = p.parse_args(argv)

    if args.cmd == "schema":
        from voxray.protocol.schema import protocol_schema_json

        text = protocol_schema_json()
        if args.output:
            with open(args.output, "w") as f:
                f.write(text + "\n")
        else:
            print(text)
    elif args.cmd == "serve":
        _serve(args)
    elif args.cmd == "demo":
        _serve(args, then=_demo)
    elif args.cmd == "agent":
        _agent(args)


if __name__ == "__main__":
    main()
