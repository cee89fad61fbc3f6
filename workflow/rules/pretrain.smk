# AV-MAE pretraining of every avmae variant, and the unimodal MAEs (Table 3 rows; at tiny/smoke
# also the branch init of every avmae variant: results/runs/<scale>/pretrain/mae_{image,audio}).


def pretrain_inputs(wildcards):
    name, _ = split_variant(wildcards.variant)
    seed = split_seed(wildcards.variant)[1]
    inputs = {"manifest": f"{manifest_dir(dataset_of('pretrain', wildcards.variant))}/manifest.csv"}
    if needs_unimodal_runs(name):
        inputs["init_image"] = f"{pretrain_run('mae_image', seed)}/metrics.json"
        inputs["init_audio"] = f"{pretrain_run('mae_audio', seed)}/metrics.json"
    return inputs


rule pretrain:
    """avfusion pretrain through avfusion.launch (executor from the config / profile)."""
    input: unpack(pretrain_inputs)
    output: f"{RUNS}/pretrain/{{variant}}/metrics.json"
    wildcard_constraints: variant=pretrain_regex()
    log: f"{RUNS}/pretrain/{{variant}}/launch.log"
    params: cfg=lambda w: job_config("pretrain", w.variant)
    threads: job_threads("pretrain")
    run: run_job("pretrain", wildcards.variant, params.cfg, log[0])
