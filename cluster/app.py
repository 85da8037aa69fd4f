"""Builds the Serve application: the ingress bound to its model deployments, with the
cluster's scaling options and the way to the UA nodes."""

from __future__ import annotations

from ray.serve import Application

from voxray.cluster.autoscaling import deployment_options
from voxray.cluster.llm_agent import bind_agent
from voxray.cluster.placement import UaNodeDirectory
from voxray.config import VoxrayConfig
from voxray.deployments.asr import AsrDeployment
from voxray.deployments.ingress import Ingress
from voxray.deployments.registry import CallRegistry
from voxray.deployments.tts import TtsDeployment
from voxray.deployments.vad import VadDeployment


def build_app(config: VoxrayConfig) -> Application:
    opts = deployment_options(config)
    # Silero runs inside the processes that hold the calls' audio by default: the VAD
    # deployment is only there for `media.vad_in_process = false` (an idle replica is a
    # process, ~1 % of a core and its memory, for nothing).
    vad = None if config.media.vad_in_process else VadDeployment.options(**opts["vad"]).bind(config.models.silero_vad)
    providers = config.providers.model_dump()
    asr = AsrDeployment.options(**opts["asr"]).bind(providers, config.models.model_dump())
    tts = TtsDeployment.options(**opts["tts"]).bind(providers, config.models.piper_voice, config.models.piper_device,
                                                    config.models.tts_slots, config.models.piper_threads,
                                                    config.models.tts_later_idle)
    registry = CallRegistry.bind(config.security.cdr_path)
    # The in-cluster LLM agent ([agent] enabled): the ingress's POST /agent/webhook hands it calls.
    agent = bind_agent(config)
    return Ingress.options(**opts["ingress"]).bind(
        vad, asr, tts, registry, config.media_dict(), config.transports.model_dump(),
        config.serve.app_name,
        # Tokens are resolved here, where the environment is the operator's.
        config.security.model_copy(update={"api_tokens": config.security.tokens(), "api_token_env": ""}).model_dump(),
        config.admission.model_dump(),
        UaNodeDirectory(),
        **({"agent": agent} if agent is not None else {}),
    )
