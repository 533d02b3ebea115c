"""What fixed it: the mitigation loop (plan → arms on Ray Train + DeepSpeed → re-audit → compare).

``plan`` reads a diagnosed audit and writes plan.json; ``arms`` holds the registered remedies;
``run`` trains and re-audits every arm; ``compare`` counts transitions by sample id.
"""
