"""The in-cluster LLM agent from the config's `[agent]` section: its playbook (read and checked
where the app is deployed), its Serve options and its bound deployment (cluster/app.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from voxray.agents.llm.inbound import DEFAULT_MAX_CALLS, default_server_url, ws_root
from voxray.agents.llm.playbook import Playbook, parse_playbook
from voxray.cluster.autoscaling import _scaling, actor_options
from voxray.config import AgentSettings, VoxrayConfig

if TYPE_CHECKING:
    from ray.serve import Application


def agent_playbook(settings: AgentSettings, env: dict[str, str] | None = None) -> Playbook:
    """The playbook ([agent] playbook_text, else the file at `playbook`), `${VAR}` and OPENAI_*
    from this environment (the operator's, as for the API tokens), base_url/model overrides put in."""
    env = dict(os.environ) if env is None else env
    if settings.playbook_text:
        book = parse_playbook(settings.playbook_text, name="agent", env=env)
    elif settings.playbook:
        path = Path(settings.playbook).expanduser()
        book = parse_playbook(path.read_text(encoding="utf-8"), name=path.stem, env=env)
    else:
        raise ValueError("[agent] enabled needs `playbook` (a file) or `playbook_text`")
    if settings.base_url:
        book.config.llm.base_url = settings.base_url
    if settings.model:
        book.config.llm.model = settings.model
    return book


def agent_max_calls(settings: AgentSettings) -> int:
    return settings.scaling.max_ongoing_requests or DEFAULT_MAX_CALLS


def agent_options(config: VoxrayConfig, declared: dict | None = None) -> dict:
    """`.options()` for LlmAgentDeployment: [agent.scaling] as for the other deployments, and
    max_ongoing_requests always set: it is the calls per replica."""
    s = config.agent.scaling
    opts = _scaling(s)
    opts["max_ongoing_requests"] = agent_max_calls(config.agent)
    if s.num_gpus > 0 or s.num_cpus is not None:
        if declared is None:
            from voxray.deployments.llm_agent import LlmAgentDeployment

            declared = dict(LlmAgentDeployment.ray_actor_options or {})
        opts["ray_actor_options"] = actor_options(s, declared)
    return opts


def agent_server_url(config: VoxrayConfig) -> str:
    url = config.agent.server_url or default_server_url(config.serve.host, config.serve.port,
                                                        config.serve.route_prefix)
    ws_root(url)  # a URL it could never connect to fails the deploy, not each call
    return url


def agent_init_args(config: VoxrayConfig, env: dict[str, str] | None = None) -> dict:
    """LlmAgentDeployment's constructor arguments."""
    tokens = config.security.tokens()
    return {
        "playbook": agent_playbook(config.agent, env).model_dump(),
        "server_url": agent_server_url(config),
        "token": tokens[0] if tokens else None,
        "max_calls": agent_max_calls(config.agent),
        "call_timeout_s": config.agent.call_timeout_s,
        "summary": config.agent.summary,
        "api_key_env": config.agent.api_key_env,
    }


def bind_agent(config: VoxrayConfig) -> Application | None:
    """The bound agent deployment, or None when `[agent] enabled` is false."""
    if not config.agent.enabled:
        return None
    from voxray.deployments.llm_agent import LlmAgentDeployment

    return LlmAgentDeployment.options(**agent_options(config)).bind(**agent_init_args(config))
