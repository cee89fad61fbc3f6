# Downstream tasks of every pretrained variant (and Sound of Pixels, trained by the separation task).
# Input functions, job commands and resources: common.smk.


rule downstream:
    """avfusion <task> (linprobe, finetune, separation, segmentation, localization, efficiency)."""
    input: unpack(downstream_inputs)
    output: update(f"{RUNS}/{{task}}/{{variant}}/metrics.json")  # kept until the new run has finished (avfusion.jobconfig)
    wildcard_constraints:
        task="|".join(DOWNSTREAM_TASKS),
        variant=wildcard_regex(variants_of("avmae", "unimodal", "supervised", "released", "efficiency")),
    log: f"{RUNS}/{{task}}/{{variant}}/launch.log"
    params: job=lambda w: job_shell(w.task, w.variant)
    threads: max(job_threads(t) for t in DOWNSTREAM_TASKS)
    resources:
        mem_mb=downstream_resource("mem_mb"),
        runtime=downstream_resource("runtime"),
        gpus=downstream_resource("gpus"),
    conda: "../../environment.yml"
    shell: "{params.job} >> {log:q} 2>&1"


rule released:
    """Every downstream run (Tables 1-3, 7) of the released checkpoints that the config gives."""
    input: released_runs
    localrule: True
