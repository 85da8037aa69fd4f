"""UA node: terminates calls and holds each call's media session.

`media/` is the I/O-free media core (codecs, resampling, VAD segmentation, playout)
shared by every transport; SIP/RTP and WebRTC adapters live beside it.
"""
