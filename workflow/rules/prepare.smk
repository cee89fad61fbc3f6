# Manifests: the embedded tuxav benchmark (smoke, tiny) or an official layout (paper).
TUXAV = [d for d, s in config["datasets"].items() if s["source"] == "tuxav"]
PREPARED = [d for d, s in config["datasets"].items() if s["source"] == "prepare"]


if TUXAV:
    rule make_tuxav:
        """avfusion data make-tuxav: real Tux Paint photos and sounds -> clips, masks, pairs."""
        output: f"{config['data_dir']}/{SCALE}/{{dataset}}/manifest.csv"
        wildcard_constraints: dataset="|".join(TUXAV)
        log: f"{config['data_dir']}/{SCALE}/{{dataset}}.log"
        params: out=lambda w: manifest_dir(w.dataset), seed=config["seed"], scale=SCALE
        conda: "../../environment.yml"
        shell: "avfusion data make-tuxav --scale {params.scale} --seed {params.seed} --out {params.out} > {log} 2>&1"


if PREPARED:
    rule prepare_dataset:
        """avfusion data prepare: parse an official layout (root from `datasets.<name>.root`)."""
        output: f"{config['data_dir']}/{SCALE}/{{dataset}}/manifest.csv"
        wildcard_constraints: dataset="|".join(PREPARED)
        log: f"{config['data_dir']}/{SCALE}/{{dataset}}.log"
        params:
            out=lambda w: manifest_dir(w.dataset),
            name=lambda w: config["datasets"][w.dataset]["name"],
            root=prepare_root,   # an empty root fails when the DAG is built, naming the key
        conda: "../../environment.yml"
        shell: "avfusion data prepare {params.name} --root {params.root:q} --out {params.out} > {log} 2>&1"
