"""Copying one image graph from a source to many targets: plan, blob fan-out, manifest push."""
