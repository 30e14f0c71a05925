"""Loaded by the schemathesis CLI (SCHEMATHESIS_HOOKS, testkit/fuzzing.py): the WebRTC routes take an
SDP offer as `application/sdp`, which schemathesis has no serializer for; SDP is UTF-8 text, so it
is sent as text/plain would be."""

import schemathesis

schemathesis.serializer.alias("application/sdp", "text/plain")
