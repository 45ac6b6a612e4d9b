"""WebRTC in and out: actor video through WHIP (a browser, OBS), rig frames back over data
channels, and the try-it page; served over HTTP beside the gRPC server."""
