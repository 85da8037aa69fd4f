"""An LLM agent in the box: a playbook-driven voice agent for any OpenAI-compatible model.

One module per concern, so each can be read and tested alone:

- `playbook`: the Markdown playbook (YAML front matter + system prompt), active-call's format.
- `chat_stream`: SSE parsing of chat-completions streams and the httpx client.
- `tools`: the function tools offered to the model and tool-call fragment assembly.
- `conversation`: the call's brain with no I/O (events in, actions out), as h11 is for HTTP.
- `runner`: the asyncio adapter that wires a WebSocket, the model client and timers to it.
- `inbound`: answering inbound calls from webhooks inside the cluster (deployments/llm_agent.py).

Run: voxray agent --playbook examples/playbooks/receptionist.md --url ws://127.0.0.1:8000/call
"""
