"""The study's stages: one idempotent driver per workflow rule.

Each stage module reads a profile, calls the science modules, writes its artefacts under
``results/<profile>/<stage>/`` (:mod:`vstain.layout`) and owns its command-line options
(``configure_parser`` / ``run_cli``, listed in :mod:`vstain.cli`). A stage obtains what another
stage wrote only through the resolver, :mod:`vstain.stages.upstream`: a missing input stops it with
the command that makes it (the workflow owns the graph), and every "is this output current" test is
:func:`vstain.io.is_current`.
"""
