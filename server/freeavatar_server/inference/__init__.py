"""Every model the live path runs, each behind one small class built the same way: the session
comes from `onnx.open_session` (one provider policy, one thread by default) and the default
file from `shipped` (the one place that knows where the package's models are)."""
