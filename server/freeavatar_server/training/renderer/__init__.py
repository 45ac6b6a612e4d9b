"""Per-avatar neural renderers: rig controls -> avatar image, differentiable end to end."""
