# Baselines without a pretraining stage (NMF, RPCA), and aliases (a row the paper reports twice).


rule classical_separation:
    """avfusion classical-separation (NMF / RPCA) on the fixed evaluation pairs."""
    input: manifest=lambda w: f"{manifest_dir(dataset_of('separation', w.variant))}/manifest.csv"
    output: update(f"{RUNS}/separation/{{variant}}/metrics.json")  # kept until the new run has finished (avfusion.jobconfig)
    wildcard_constraints: variant=wildcard_regex(variants_of("classical"))
    log: f"{RUNS}/separation/{{variant}}/launch.log"
    params: job=lambda w: job_shell("separation", w.variant, command="classical-separation")
    threads: job_threads("classical-separation")
    resources: **rule_resources("classical-separation")
    conda: "../../environment.yml"
    shell: "{params.job} >> {log:q} 2>&1"


rule alias_run:
    """Copy the aliased variant's metrics.json (provenance.alias_of names the run it came from)."""
    input: source=alias_target
    output: metrics=f"{RUNS}/{{task}}/{{variant}}/metrics.json"
    wildcard_constraints:
        task="|".join(["pretrain", *DOWNSTREAM_TASKS]),
        variant=wildcard_regex(variants_of("alias")),
    log: f"{RUNS}/{{task}}/{{variant}}/alias.log"
    localrule: True
    # a shell job: a `run:` job would start a child Snakemake that parses the workflow again (avfusion/aliasrun.py)
    conda: "../../environment.yml"
    shell: "python -m avfusion.aliasrun {input.source:q} {output.metrics:q} {log:q}"
