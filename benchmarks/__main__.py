"""``make bench``: time regcast against skopeo and against the raw limit on real registries."""

from benchmarks.runner import main

main()
