"""Push-triggered mirroring: registries' push notifications start copies of the pushed tag."""
