"""The builder farm's container side: turns one sdist into a wheel for one platform.

The worker calls plain functions; nothing here talks to the index server:

- :func:`builder.images.build_image` / :func:`~builder.images.ensure_image`: the platform's
  build image ``wheelfarm-build/<platform>:latest`` from ``platforms/images/Dockerfile``
  FROM the platform's ``base_image``;
- :func:`builder.fetch.fetch_with_hash`: download an sdist, refusing a sha256 mismatch;
- :func:`builder.build.build_wheel`: build in a fresh container, inspect the wheel
  (``auditwheel``, system libraries -> OS packages, ``auditwheel repair`` for manylinux
  platforms), install and import it in a second container; returns a
  :class:`~builder.build.BuildResult` with a failure category from :mod:`builder.classify`;
- :mod:`builder.runners`: the ``Runner`` protocol, ``ContainerRunner`` (Podman or Docker)
  and ``HostRunner`` (this machine, only when it is the platform).

The index server does not depend on this package.
"""
