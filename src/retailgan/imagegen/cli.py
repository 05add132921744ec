"""``retailgan images ...``: train the product-image GAN, generate, personalise, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from retailgan.cli_common import run_guarded, write_json
from retailgan.errors import ConfigError
from retailgan.imagegen import DEFAULT_TRUNCATION

images_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Generated product images: a class-conditional GAN, labelled as synthetic, with measured quality.",
)


def _run(go, threads: int = 1):
    """Run a command with ``threads`` torch threads (the machine's cores are shared), errors as one line."""
    from retailgan.models.base import torch_threads

    with torch_threads(threads):
        return run_guarded(go)


def _echo_json(payload: object) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


def _params(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError('--params must be a JSON object, e.g. {"batch_size": 64}')
    return value


@images_app.command("train")
def train_cmd(
    data: str = typer.Option(..., "--data", help="'fashion-mnist' or a folder DIR/<category>/*.png|jpg."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (samples/ holds the per-epoch grids)."),
    epochs: int = typer.Option(20, "--epochs", min=1, help="Epochs of GANConfig.images_per_epoch images."),
    seed: int = typer.Option(0, "--seed"),
    dry_run: bool = typer.Option(False, "--dry-run", help="One short epoch on 256 images (for CI)."),
    params: str | None = typer.Option(None, "--params", help='GAN hyperparameters, JSON: {"g_channels": 64}'),
    time_budget: float | None = typer.Option(None, "--time-budget", help="Stop before this many minutes."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch intra-op threads."),
) -> None:
    """Train the class-conditional GAN; saves model.json + arrays.safetensors and sample grids."""

    def go() -> None:
        from retailgan.imagegen.data import describe_source
        from retailgan.imagegen.generate import train_gan

        typer.echo(f"training data: {describe_source(data)}", err=True)
        res = train_gan(
            data,
            out,
            epochs=epochs,
            seed=seed,
            dry_run=dry_run,
            params=_params(params),
            time_budget_s=None if time_budget is None else time_budget * 60.0,
            num_threads=threads,
        )
        m = res.model
        _echo_json(
            {
                "model_dir": str(res.model_dir),
                "version": m.version,
                "images": len(res.data),
                "classes": list(m.classes),
                "epochs": len(m.history),
                "train_seconds": round(m.train_seconds, 1),
                "last_epoch": m.history[-1] if m.history else {},
                "grids": [str(p) for p in res.grids],
            }
        )

    _run(go, threads)


def _model_data(model, data: str | None) -> str:
    """``--data`` if given, else the data the model was trained on (said on stderr)."""
    from retailgan.imagegen.data import FASHION_MNIST, describe_source

    if data is None:
        # Models saved before the source was recorded name it only in data_name ("fashion-mnist-train").
        data = model.data_source or (FASHION_MNIST if model.data_name.startswith(FASHION_MNIST) else None)
        if data is None:
            raise ConfigError("the model does not record the data it was trained on: pass --data")
    typer.echo(f"real data: {describe_source(data)}", err=True)
    return data


def _parse_like(like: list[str], data: str, category_label: int, shape) -> tuple[list[str], object]:
    """``--like`` values: image files, or indices into the data set's training split."""
    import numpy as np

    from retailgan.imagegen.data import load_images, read_image_file

    if all(v.isdigit() for v in like):
        ds = load_images(data, "train")
        idx = [int(v) for v in like]
        bad = [i for i in idx if i >= len(ds)]
        if bad:
            raise ConfigError(f"--like index {bad[0]} out of range (the training split has {len(ds)} images)")
        wrong = [i for i in idx if int(ds.labels[i]) != category_label]
        if wrong:
            raise ConfigError(
                f"--like image {wrong[0]} is a {ds.classes[int(ds.labels[wrong[0]])]!r}, not the requested category"
            )
        return [f"{data}:train:{i}" for i in idx], ds.images[idx]
    return list(like), np.stack([read_image_file(p, shape) for p in like])


@images_app.command("generate")
def generate_cmd(
    model_dir: Path = typer.Option(..., "--model-dir"),
    category: str = typer.Option(..., "--category", help="Category name (e.g. Sneaker) or number."),
    n: int = typer.Option(8, "--n", min=1, max=10_000),
    out: Path = typer.Option(..., "--out", help="Folder for the PNGs (each carries provenance metadata)."),
    like: list[str] = typer.Option(
        [], "--like", help="Image file of a similar product, or a training-split index (repeatable)."
    ),
    data: str | None = typer.Option(
        None, "--data", help="Data set that --like indices refer to (default: the one the model was trained on)."
    ),
    seed: int = typer.Option(0, "--seed"),
    spread: float = typer.Option(0.5, "--spread", help="--like: noise added around the inverted latents."),
    labelled: bool = typer.Option(False, "--labelled", help="Also write a display copy with a visible label."),
    truncation: float = typer.Option(
        DEFAULT_TRUNCATION, "--truncation", min=0.0, help="Scale of the noise (< 1: more fidelity, less variety)."
    ),
) -> None:
    """Generate product images of a category, optionally close to given images (latent inversion)."""

    def go() -> None:
        from retailgan.imagegen.data import class_index
        from retailgan.imagegen.generate import generate_images, generate_like
        from retailgan.imagegen.model import ConditionalGAN
        from retailgan.imagegen.provenance import label_generated, provenance, save_png

        model = ConditionalGAN.load(model_dir)
        label = class_index(model.classes, category)
        extra: dict[str, object] = {"category": model.classes[label]}
        report: dict[str, object] = {"model_version": model.version, "category": model.classes[label], "seed": seed}
        if like:
            sources, targets = _parse_like(like, _model_data(model, data), label, model.shape)
            images, err = generate_like(model, targets, label, n, spread=spread, seed=seed)
            extra["like"] = ";".join(sources)
            report["inversion_mse"] = [round(float(e), 5) for e in err]
        else:
            images = generate_images(model, label, n, seed, truncation)
            extra["truncation"] = truncation
        files = []
        slug = model.classes[label].lower().replace("/", "-").replace(" ", "-")
        for i, im in enumerate(images):
            meta = provenance(model.meta()["generator"], model.version, seed, index=i, **extra)
            files.append(str(save_png(im, out / f"{slug}-{seed}-{i:04d}.png", meta)))
            if labelled:
                save_png(label_generated(im), out / "labelled" / f"{slug}-{seed}-{i:04d}.png", meta)
        report["files"] = files
        _echo_json(report)

    _run(go)


@images_app.command("evaluate")
def evaluate_cmd(
    model_dir: Path = typer.Option(..., "--model-dir"),
    out: Path = typer.Option(..., "--out", help="Folder for evaluation.json and samples.png."),
    data: str | None = typer.Option(None, "--data", help="Real data (default: the data the model was trained on)."),
    evaluator_dir: Path | None = typer.Option(
        None, "--evaluator-dir", help="Trained evaluator (trained on the real training split and saved here if absent)."
    ),
    n: int = typer.Option(10_000, "--n", min=100),
    seed: int = typer.Option(0, "--seed"),
    gan_train_n: int | None = typer.Option(None, "--gan-train-n", help="Generated images for GAN-train."),
    threads: int = typer.Option(1, "--threads", min=1),
    truncation: float = typer.Option(
        DEFAULT_TRUNCATION, "--truncation", min=0.0, help="Scale of the noise (< 1: more fidelity, less variety)."
    ),
) -> None:
    """Quality metrics (FD, KID, precision/recall, GAN-test/-train, copy check) beside real and noise rows."""

    def go() -> None:
        from retailgan.imagegen.generate import save_grid
        from retailgan.imagegen.model import ConditionalGAN
        from retailgan.imagegen.quality import evaluate_gan

        model = ConditionalGAN.load(model_dir)
        result = evaluate_gan(
            model,
            data=_model_data(model, data),
            evaluator_dir=evaluator_dir or (model_dir / "evaluator"),
            n=n,
            seed=seed,
            gan_train_n=gan_train_n,
            num_threads=threads,
            truncation=truncation,
        )
        write_json(out / "evaluation.json", result)
        save_grid(model, out / "samples.png", seed=seed)
        _echo_json(_summary(result))

    _run(go, threads)


def _summary(result: dict) -> dict:
    keys = ("fd", "kid", "precision", "recall", "density", "coverage", "gan_test", "gan_train", "gan_test_on_real_test")
    return {
        "evaluator_test_accuracy": result["evaluator"]["test_accuracy"],
        "rows": {name: {k: round(v, 4) for k, v in row.items() if k in keys} for name, row in result["rows"].items()},
        "copy_check": result["copy_check"],
    }


@images_app.command("personalize")
def personalize_cmd(
    model_dir: Path = typer.Option(..., "--model-dir"),
    out: Path = typer.Option(..., "--out", help="Folder for the PNGs (with provenance metadata)."),
    customer: str | None = typer.Option(
        None, "--customer", help="Held-out benchmark customer id (fmnist-0 ... fmnist-19) of --data."
    ),
    liked: list[Path] = typer.Option([], "--liked", help="Image the customer bought or liked (repeatable)."),
    category: str | None = typer.Option(None, "--category", help="Category (default: the customer's first)."),
    n: int = typer.Option(4, "--n", min=1, max=8, help="Images to return (the best of 8 search starts)."),
    data: str | None = typer.Option(
        None, "--data", help="Real data: the category catalogue (default: the data the model was trained on)."
    ),
    evaluator_dir: Path | None = typer.Option(None, "--evaluator-dir", help="Default: MODEL_DIR/evaluator."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Images of a category that a customer's preference (fitted on liked images) scores highest."""

    def go() -> None:
        import numpy as np

        from retailgan.imagegen.data import class_index, load_images, read_image_file
        from retailgan.imagegen.evaluator import Evaluator
        from retailgan.imagegen.model import ConditionalGAN
        from retailgan.imagegen.personalize import define_customers, fit_preference, personalise
        from retailgan.imagegen.provenance import provenance, save_png

        if (customer is None) == (not liked):
            raise ConfigError("give either --customer ID or --liked IMAGE (repeatable)")
        model = ConditionalGAN.load(model_dir)
        ev_dir = evaluator_dir or model_dir / "evaluator"
        ev = Evaluator.load(ev_dir)
        data_ = _model_data(model, data)
        train = load_images(data_, "train")
        if customer is not None:
            test = load_images(data_, "test")
            customers = {c.id: c for c in define_customers(test, ev)}
            if customer not in customers:
                raise ConfigError(f"unknown customer {customer!r}; known: {', '.join(customers)}")
            cust = customers[customer]
            label = class_index(model.classes, category) if category else cust.labels[0]
            if label not in cust.liked:
                raise ConfigError(f"customer {customer} has no liked images in category {model.classes[label]!r}")
            liked_images = test.images[cust.liked[label]]
        else:
            if category is None:
                raise ConfigError("--liked needs --category")
            label = class_index(model.classes, category)
            liked_images = np.stack([read_image_file(p, model.shape) for p in liked])
        pref = fit_preference(ev, liked_images, train.images[train.labels == label], label)
        images, scores = personalise(model, ev, pref, n, seed=seed)
        files = []
        slug = model.classes[label].lower().replace("/", "-").replace(" ", "-")
        who = customer or "liked"
        for i, (im, sc) in enumerate(zip(images, scores, strict=True)):
            meta = provenance(
                model.meta()["generator"],
                model.version,
                seed,
                category=model.classes[label],
                customer=who,
                preference_score=f"{float(sc):.4f}",
                index=i,
            )
            files.append(str(save_png(im, out / f"{who}-{slug}-{seed}-{i:02d}.png", meta)))
        _echo_json(
            {
                "customer": who,
                "category": model.classes[label],
                "preference_scores": [round(float(s), 4) for s in scores],
                "predicted": [model.classes[int(p)] for p in ev.predict(images)],
                "files": files,
            }
        )

    _run(go)


def _category_map(pairs: list[str], option: str = "--map", left: str = "CATALOGUE_CATEGORY") -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs:
        cat, sep, cls = p.partition("=")
        if not sep or not cat.strip() or not cls.strip():
            raise ConfigError(f"{option} {p!r}: expected {left}=MODEL_CLASS, e.g. {option} 'SHOES=Sneaker'")
        out[cat.strip()] = cls.strip()
    return out


@images_app.command("attach")
def attach_cmd(
    store: Path = typer.Option(..., "--store", help="The DuckDB store whose catalogue gets the photos."),
    folder: Path = typer.Option(..., "--dir", help="Photos named <product id>.png|jpg|jpeg|webp|gif|bmp."),
    replace: bool = typer.Option(False, "--replace", help="Replace existing images (photos or generated)."),
) -> None:
    """Store the retailer's product photos with the catalogue (unreadable or unknown files are reported)."""

    def go() -> None:
        from retailgan.data.images import image_counts, import_photos
        from retailgan.data.store import Store

        with Store.open(store, create=False) as s:
            res = import_photos(s, folder, replace=replace)
            counts = image_counts(s)
        for path, why in res.skipped:
            typer.echo(f"skipped {path}: {why}", err=True)
        _echo_json({"stored": res.stored, "skipped": len(res.skipped), "catalogue": counts})

    _run(go)


@images_app.command("fill")
def fill_cmd(
    store: Path = typer.Option(..., "--store", help="The DuckDB store whose products without an image get one."),
    model_dir: Path = typer.Option(..., "--model-dir", help="A trained image model (retailgan images train)."),
    mapping: list[str] = typer.Option(
        [], "--map", help="CATALOGUE_CATEGORY=MODEL_CLASS (repeatable); categories equal to a class match as they are."
    ),
    title_words: list[str] = typer.Option(
        [], "--title-word", help="WORD=MODEL_CLASS (repeatable): titles with the word, where no category matches."
    ),
    seed: int = typer.Option(0, "--seed"),
    limit: int | None = typer.Option(None, "--limit", min=0, help="Generate at most this many images."),
    truncation: float = typer.Option(
        DEFAULT_TRUNCATION, "--truncation", min=0.0, help="Scale of the noise (< 1: more fidelity, less variety)."
    ),
) -> None:
    """Generate an image for every catalogue product without one, stored with it and flagged as generated."""

    def go() -> None:
        from retailgan.data.images import image_counts
        from retailgan.data.store import Store
        from retailgan.imagegen.catalogue import fill_catalogue
        from retailgan.imagegen.model import ConditionalGAN

        model = ConditionalGAN.load(model_dir)
        with Store.open(store, create=False) as s:
            rep = fill_catalogue(s, model, category_map=_category_map(mapping),
                                 title_map=_category_map(title_words, "--title-word", "WORD"), seed=seed, limit=limit,
                                 truncation=truncation)
            counts = image_counts(s)
        _echo_json({"generated": rep.generated, "per_class": rep.per_class, "without_matching_class": rep.unmatched,
                    "model_version": rep.model_version, "catalogue": counts})

    _run(go)
