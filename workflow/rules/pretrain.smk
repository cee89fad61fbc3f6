# AV-MAE pretraining of every avmae variant, and the unimodal MAEs (Table 3 rows; at tiny/smoke
# also the branch init of every avmae variant: results/runs/<scale>/pretrain/mae_{image,audio}).
# Input functions, job commands and resources: common.smk.


rule pretrain:
    """avfusion pretrain through avfusion.launch (executor from the config / profile)."""
    input: unpack(pretrain_inputs)
    output: update(f"{RUNS}/pretrain/{{variant}}/metrics.json")  # kept until the new run has finished (avfusion.jobconfig)
    wildcard_constraints: variant=pretrain_regex()
    log: f"{RUNS}/pretrain/{{variant}}/launch.log"
    params: job=lambda w: job_shell("pretrain", w.variant)
    threads: job_threads("pretrain")
    resources: **rule_resources("pretrain")
    conda: "../../environment.yml"
    shell: "{params.job} >> {log:q} 2>&1"
