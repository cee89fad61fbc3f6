# Baselines without a pretraining stage (NMF, RPCA), and aliases (a row the paper reports twice).


rule classical_separation:
    """avfusion classical-separation (NMF / RPCA) on the fixed evaluation pairs."""
    input: manifest=lambda w: f"{manifest_dir(dataset_of('separation', w.variant))}/manifest.csv"
    output: f"{RUNS}/separation/{{variant}}/metrics.json"
    wildcard_constraints: variant=wildcard_regex(variants_of("classical"))
    log: f"{RUNS}/separation/{{variant}}/launch.log"
    params: cfg=lambda w: job_config("separation", w.variant)
    threads: job_threads("classical-separation")
    run: run_job("separation", wildcards.variant, params.cfg, log[0], command="classical-separation")


def alias_target(wildcards):
    base, seed = split_seed(wildcards.variant)
    name, dataset = split_variant(wildcards.variant)
    target = VARIANTS[name]["alias_of"] + (f"@{dataset}" if dataset else "") + seed_folder(seed)
    return f"{run_dir(wildcards.task, target)}/metrics.json"


rule alias_run:
    """Copy the aliased variant's metrics.json (provenance.alias_of names the run it came from)."""
    input: alias_target
    output: f"{RUNS}/{{task}}/{{variant}}/metrics.json"
    wildcard_constraints:
        task="|".join(["pretrain", *DOWNSTREAM_TASKS]),
        variant=wildcard_regex(variants_of("alias")),
    localrule: True
    run:
        import json
        from avfusion.io import atomic_write_json

        payload = json.loads(Path(input[0]).read_text())
        payload["provenance"]["alias_of"] = str(Path(input[0]).parent)
        atomic_write_json(output[0], payload)
