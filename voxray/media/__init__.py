"""The media core: one call's audio and turns, free of transports and of Ray.

Codecs and resampling, VAD segmentation, playout and mixing, the call's
`MediaSession`, the typed messages to the models and the `ModelServices` seam
that reaches them, and how agent commands apply to a session. The UA node
(`ua_node/`, SIP/RTP and WebRTC) and the ingress (`deployments/`, audio over the
agent's WebSocket) both stand on it and never import each other.
"""
