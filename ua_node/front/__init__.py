"""The node's SIP front: Kamailio, configured from the pool (`config`), run and steered
by the UA node (`process`)."""
