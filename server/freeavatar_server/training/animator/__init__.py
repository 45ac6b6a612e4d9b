"""The shared multi-avatar animator: expression embedding + avatar code -> that avatar's rig."""
