# Downstream tasks of every pretrained variant (and Sound of Pixels, trained by the separation task).


def downstream_inputs(wildcards):
    name, _ = split_variant(wildcards.variant)
    kind = VARIANTS[name]["kind"]
    if kind == "supervised" and wildcards.task != "separation":
        raise WorkflowError(f"variant {name!r} (kind supervised) only has a separation run, not {wildcards.task}")
    inputs = {}
    if wildcards.task != "efficiency":
        inputs["manifest"] = f"{manifest_dir(dataset_of(wildcards.task, wildcards.variant))}/manifest.csv"
    if kind in ("avmae", "unimodal") and wildcards.task != "efficiency":
        inputs["pretrain"] = f"{pretrain_run(name, split_seed(wildcards.variant)[1])}/metrics.json"
    return inputs


rule downstream:
    """avfusion <task> (linprobe, finetune, separation, segmentation, localization, efficiency)."""
    input: unpack(downstream_inputs)
    output: f"{RUNS}/{{task}}/{{variant}}/metrics.json"
    wildcard_constraints:
        task="|".join(DOWNSTREAM_TASKS),
        variant=wildcard_regex(variants_of("avmae", "unimodal", "supervised")),
    log: f"{RUNS}/{{task}}/{{variant}}/launch.log"
    params: cfg=lambda w: job_config(w.task, w.variant)
    threads: max(job_threads(t) for t in DOWNSTREAM_TASKS)
    run: run_job(wildcards.task, wildcards.variant, params.cfg, log[0])
