"""Ray Serve deployments: the call ingress and the model services (VAD, ASR, TTS)."""
