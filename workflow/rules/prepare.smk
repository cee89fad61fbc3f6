# Manifests: the embedded tuxav benchmark (smoke, tiny) or an official layout (paper).
TUXAV = [d for d, s in config["datasets"].items() if s["source"] == "tuxav"]
PREPARED = [d for d, s in config["datasets"].items() if s["source"] == "prepare"]
CACHED = [d for d, s in config["datasets"].items() if s.get("media") == "prepared"]


if TUXAV:
    rule make_tuxav:
        """avfusion data make-tuxav: real Tux Paint photos and sounds -> clips, masks, pairs."""
        output: f"{config['data_dir']}/{SCALE}/{{dataset}}/manifest.csv"
        wildcard_constraints: dataset="|".join(TUXAV)
        log: f"{config['data_dir']}/{SCALE}/{{dataset}}.log"
        params:
            out=lambda w: source_manifest_dir(w.dataset), seed=config["seed"], scale=SCALE,
            contrast=lambda w: config["datasets"][w.dataset].get("background_contrast", 1.0),
            background=lambda w: config["datasets"][w.dataset].get("background", "drawn"),
            stamps=lambda w: (f"--stamps-per-class {config['datasets'][w.dataset]['stamps_per_class']}"
                              if "stamps_per_class" in config["datasets"][w.dataset] else ""),
        conda: "../../environment.yml"
        shell: "avfusion data make-tuxav --scale {params.scale} --seed {params.seed} --out {params.out} --background {params.background} --background-contrast {params.contrast} {params.stamps} --decoded > {log} 2>&1"


if PREPARED:
    rule prepare_dataset:
        """avfusion data prepare: parse an official layout (root from `datasets.<name>.root`)."""
        output: f"{config['data_dir']}/{SCALE}/{{dataset}}/manifest.csv"
        wildcard_constraints: dataset="|".join(PREPARED)
        log: f"{config['data_dir']}/{SCALE}/{{dataset}}.log"
        params:
            out=lambda w: source_manifest_dir(w.dataset),
            name=lambda w: config["datasets"][w.dataset]["name"],
            root=prepare_root,   # an empty root fails when the DAG is built, naming the key
        conda: "../../environment.yml"
        shell: "avfusion data prepare {params.name} --root {params.root:q} --out {params.out} > {log} 2>&1"


if CACHED:
    rule cache_dataset:
        """avfusion data cache (datasets.<name>.media: prepared): every clip decoded once into shards that the
        jobs read instead of the media files; resumable (finished shards are kept when a run is killed)."""
        input: f"{config['data_dir']}/{SCALE}/{{dataset}}/manifest.csv"
        output: f"{config['data_dir']}/{SCALE}/{{dataset}}-prepared/manifest.csv"
        wildcard_constraints: dataset="|".join(CACHED)
        log: f"{config['data_dir']}/{SCALE}/{{dataset}}-prepared.log"
        threads: lambda w: int(config["datasets"][w.dataset].get("cache", {}).get("workers", 1))
        params:
            source=lambda w: source_manifest_dir(w.dataset),
            out=lambda w: manifest_dir(w.dataset),
            options=lambda w: PLAN.cache_arguments(w.dataset),
        conda: "../../environment.yml"
        shell: "avfusion data cache --manifest {params.source} --out {params.out} {params.options} > {log} 2>&1"
