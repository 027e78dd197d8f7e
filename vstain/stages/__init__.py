"""The study's stages: one idempotent driver per workflow rule.

Each stage module reads a profile, calls the science modules, writes its artefacts under
``results/<profile>/<stage>/`` (:mod:`vstain.layout`) and owns its command-line options
(``configure_parser`` / ``run_cli``, listed in :mod:`vstain.cli`).
"""
