"""UA node: terminates SIP/RTP (`sip/`) and WebRTC (`webrtc.py`) calls and holds each
call's media session (the media core, `voxray.media`), one node actor per Ray node."""
