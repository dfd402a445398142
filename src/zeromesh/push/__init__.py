"""Configuration push between the control plane and the proxies, in the spirit of xDS.

Vocabulary: a *proxy* (node agent or waypoint) holds one mTLS WebSocket stream to
the control plane; the control plane sends *updates* (typed resources keyed by
name, full or incremental, each with a *version* and a *nonce*); the proxy
answers each with an *ACK* or a *NACK* and keeps serving its last good
configuration after a NACK or while the control plane is away.
"""
