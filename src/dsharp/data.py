"""Training data: prompt lists for online methods, image-text sources for SFT-style methods.

Batches are a pure function of ``(seed, step, process, micro-step)``, so a resumed run draws
exactly the batches the uninterrupted run would have, without saving sampler state, and each
data-parallel process draws different ones.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import stat
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import torch
from PIL import Image

from dsharp.hub import user_path
from dsharp.image_files import as_rgb, read_rgb
from dsharp.redaction import quoted

if TYPE_CHECKING:
    from dsharp.methods.base import Batch

#: The files a folder dataset trains on (each with a same-stem ``.txt`` caption). Other files
#: are skipped, a ``preview.gif`` or a ``scan.tif`` beside the data included: adding a suffix
#: here would refuse a folder that trains today for such a file's missing caption.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def read_prompt_file(path: Path) -> list[str]:
    """The prompts of a file read as recipes read theirs (one per line, ``#`` lines and blank
    lines skipped, a UTF-8 byte-order mark dropped), refusing a file that holds none: a
    missing input, so a ``RecipeError`` (exit 2, as an empty ``prompts_file`` in a recipe)."""
    from dsharp.config import read_prompts_file
    from dsharp.recipe_errors import RecipeError

    prompts = read_prompts_file(path)
    if not prompts:
        raise RecipeError(f"{path}: no prompts in file")
    return prompts


def batch_rng(seed: int, step: int, process: int, micro: int) -> random.Random:
    """The deterministic RNG of one micro-batch."""
    return random.Random(f"{seed}:{step}:{process}:{micro}")


def torch_generator(seed: int, step: int, process: int, micro: int) -> torch.Generator:
    """A CPU torch generator for one micro-batch's noises and timesteps."""
    rng = batch_rng(seed, step, process, micro)
    return torch.Generator().manual_seed(rng.getrandbits(63))


class ImageTextSource(Protocol):
    """What SFT training reads, whatever the storage (folder, .jsonl, Hugging Face)."""

    def __len__(self) -> int: ...

    def get(self, index: int) -> tuple[Image.Image, str]:
        """Example ``index`` as an RGB image and its caption, read only when drawn."""
        ...


class Example(NamedTuple):
    """One image-text row: the image file, its caption, and where the row is (for errors)."""

    path: Path
    caption: str
    where: str


def _caption(value: Any, where: str, column: str) -> str:
    """A row's caption, refusing one that is not text: ``str()`` would train on ``None``,
    ``5`` or ``['a', 'b']`` as if it were the caption."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: caption column {column!r} holds {shown_value(value)}, not text")
    return value


def shown_value(value: Any) -> str:
    """``value``'s kind and (shortened) value, for an error: ``a number (5)``, ``null``; a
    key or a URL's credentials in it redacted (a row's metadata may hold a signed URL)."""
    return _kind(value) if value is None else f"{_kind(value)} ({quoted(value)})"


def _kind(value: Any) -> str:
    """A JSON value's kind as a user reads it: ``null``, ``a number``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {"list": "a list", "dict": "an object"}.get(type(value).__name__, "a value")


def _image_file(path: Path, where: str, shown: str, relative_to: Path | None = None) -> Path:
    """``path`` if it is a non-empty file; a ``FileNotFoundError`` / ``ValueError`` naming
    ``where`` otherwise (a stat per row: the images themselves are read only when drawn)."""
    try:
        info = path.stat()
    except OSError:
        hint = ""
        written = user_path(shown)
        if relative_to is not None and not written.is_absolute() and written.is_file():
            hint = f" (image paths are relative to {relative_to}, not to the working directory)"
        raise FileNotFoundError(f"{where}: image not found: {shown}{hint}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{where}: image is not a file: {shown}")
    if info.st_size == 0:
        raise ValueError(f"{where}: image file is empty (0 bytes): {shown}")
    return path


def jsonl_lines(path: Path) -> list[tuple[int, str]]:
    """The numbered non-blank lines of a UTF-8 ``.jsonl`` file (a byte-order mark dropped);
    a ``ValueError`` naming the file and line that is not UTF-8. Lines end at ``\\n``,
    ``\\r\\n`` or ``\\r`` only, which JSON text cannot hold unescaped: ``str.splitlines``
    also cut at U+2028 and the like, which a caption written by ``json.dumps(...,
    ensure_ascii=False)`` may hold."""
    rows = []
    for lineno, raw in enumerate(_LINE_END.split(path.read_bytes()), 1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not UTF-8 text ({exc.reason})") from None
        if line.strip():
            rows.append((lineno, line))
    return rows


_LINE_END = re.compile(rb"\r\n|\r|\n")


def _caption_file(path: Path) -> str:
    """A ``.txt`` caption, read as UTF-8 (a byte-order mark dropped, as Notepad writes it)."""
    try:
        return path.read_bytes().decode("utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _all_captions_empty(items: Sequence[Example], where: Path) -> None:
    """Refuse data whose every caption is blank: training would learn no text conditioning,
    most likely from a caption column or files that hold something else."""
    if items and not any(item.caption.strip() for item in items):
        raise ValueError(f"{where}: every caption is empty")


#: A folder's caption files in Hugging Face ``imagefolder``'s names (one of them at most).
METADATA_FILES = ("metadata.jsonl", "metadata.csv")


class FolderSource:
    """An image folder as Hugging Face's ``imagefolder`` reads one.

    With a ``metadata.jsonl`` or ``metadata.csv`` in the folder, its rows are the data: an
    image path (relative to the folder, subfolders allowed, ``~`` the home directory) and a
    caption; images it does not list are not read, and neither are ``.txt`` files (the
    metadata replaces them, as in ``imagefolder``: merging the two would train on whichever
    caption happened to be found). Both metadata files are refused, since either could be the
    one meant. Only the top folder's metadata is read, not a subfolder's (``imagefolder``
    adds its rows, or reads ``train/`` / ``test/`` as splits): a folder of such splits is
    refused, naming the one to give, and so is a subfolder's metadata file beside the
    folder's own captions that lists an image they do not, which would otherwise be passed
    over unsaid (per-class files beside the top file that joins them are read from there,
    once, not refused). Without one, each
    top-level image of :data:`IMAGE_SUFFIXES` pairs with its same-stem ``.txt`` caption."""

    def __init__(
        self, folder: Path, image_column: str = "file_name", caption_column: str = "text"
    ) -> None:
        self.folder = Path(folder)
        metas = [self.folder / name for name in METADATA_FILES if (self.folder / name).exists()]
        if len(metas) > 1:
            raise ValueError(f"{folder}: both {' and '.join(m.name for m in metas)}: keep one")
        nested = _nested_metadata(self.folder)
        if metas:
            self.items = metadata_examples(metas[0], image_column, caption_column)
        else:
            self.items = []
            for img in sorted(self.folder.iterdir()):
                if img.suffix.lower() in IMAGE_SUFFIXES:
                    cap = img.with_suffix(".txt")
                    if not cap.exists():
                        raise FileNotFoundError(f"{img}: no caption file {cap.name}")
                    where = str(img)
                    _image_file(img, where, str(img))
                    caption = _caption_file(cap)
                    self.items.append(Example(img, caption, where))
            _all_captions_empty(self.items, self.folder)
        if not self.items:
            nested.sort(key=lambda m: m.parent.name != "train")
            hint = f" ({nested[0]} is in a subfolder: give {nested[0].parent})" if nested else ""
            raise ValueError(f"{folder}: no images with captions found{hint}")
        unread = _passed_over(nested, self.items, image_column, caption_column)
        if unread is not None:
            top = metas[0] if metas else None
            raise ValueError(_unread_metadata(*unread, self.folder, top))

    def __len__(self) -> int:
        return len(self.items)

    def get(self, index: int) -> tuple[Image.Image, str]:
        path, caption, where = self.items[index]
        return read_rgb(path, where), caption


def _nested_metadata(folder: Path) -> list[Path]:
    """The metadata files in ``folder``'s subfolders, in walk order (a Hugging Face layout
    of ``train/metadata.csv`` splits, or a copied dataset); hidden (``.name``) and special
    (``__name``) folders are passed over, as ``imagefolder`` passes them over."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        if root != str(folder):
            found += [Path(root) / name for name in METADATA_FILES if name in files]
    return found


def _passed_over(
    nested: Sequence[Path], items: Sequence[Example], image_column: str, caption_column: str
) -> tuple[Path, Example | None] | None:
    """The first of ``nested`` (subfolders' metadata files) whose rows would go unread, with
    the row when it is one that gives a listed image another caption: one that lists an
    image ``items`` (the folder's own captions) do not, gives one a caption they do not
    (``imagefolder`` trains on both rows), or cannot be read. One whose every row the
    folder's own metadata holds already (per-class files left beside the file that joins
    them) loses nothing: it is no reason to refuse the folder."""
    listed = {(os.path.normpath(item.path), _words(item.caption)) for item in items}
    images = {path for path, _ in listed}
    for path in nested:
        try:
            rows = metadata_examples(path, image_column, caption_column)
        except (OSError, ValueError):
            return path, None
        for row in rows:
            image = os.path.normpath(row.path)
            if image not in images:
                return path, None
            if (image, _words(row.caption)) not in listed:
                return path, row
    return None


def _words(caption: str) -> str:
    """A caption as its text encoder's tokenizer reads it: spacing is no other caption."""
    return " ".join(caption.split())


def _unread_metadata(nested: Path, row: Example | None, folder: Path, top: Path | None) -> str:
    """Why ``nested`` (a subfolder's metadata file) is refused beside ``folder``'s own
    captions (``top``, its metadata file; None: its ``.txt`` files): dsharp would train
    without its rows, Hugging Face's ``imagefolder`` with them, so either reading is a guess.
    ``row``: its row that gives an image another caption than ``top`` does."""
    if row is not None and top is not None:
        return (
            f"{row.where}: a metadata file in a subfolder gives {row.path.name} another "
            f"caption than {top} (imagefolder would train on both): make them agree or "
            f"move {nested.parent} out of {folder}"
        )
    if top is not None:
        return (
            f"{nested}: a metadata file in a subfolder, not read beside {top} (imagefolder "
            f"would add its rows): put its rows in {top.name} (paths relative to {folder}) or "
            f"move {nested.parent} out of {folder}"
        )
    return (
        f"{nested}: a metadata file in a subfolder, not read beside {folder}'s .txt captions "
        f"(imagefolder would read metadata files instead): give {nested.parent}, or move it "
        f"out of {folder}"
    )


class JsonlSource:
    """Lines of ``{"<image_column>": path, "<caption_column>": text}``; a relative path is
    relative to the ``.jsonl`` file's folder (not the working directory), a ``~`` is the
    home directory.

    Every row is checked when opened (a JSON object, a path to a non-empty file, a caption
    that is text); the images are read only when drawn."""

    def __init__(self, path: Path, image_column: str = "image", caption_column: str = "text"):
        self.items = metadata_examples(Path(path), image_column, caption_column)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, index: int) -> tuple[Image.Image, str]:
        path, caption, where = self.items[index]
        return read_rgb(path, where), caption


def metadata_examples(path: Path, image_column: str, caption_column: str) -> list[Example]:
    """The checked rows of a ``.jsonl`` or ``.csv`` file (by its suffix), image paths
    relative to its folder; a ``ValueError`` / ``FileNotFoundError`` naming ``file:line``
    for the first row that cannot train, or for a file without rows."""
    columns = (image_column, caption_column)
    rows = _csv_rows(path, columns) if path.suffix == ".csv" else _jsonl_rows(path)
    folder = path.parent.resolve()  # once: resolving each row's path costs a stat a part
    items = []
    for where, row in rows:
        for column in columns:
            if column not in row:
                raise ValueError(f"{where}: bad row (no column {column!r})")
        image = row[image_column]
        if not isinstance(image, str) or not image.strip():
            raise ValueError(
                f"{where}: image column {image_column!r} holds {shown_value(image)}, "
                "not a file path"
            )
        caption = _caption(row[caption_column], where, caption_column)
        full = _image_file(folder / user_path(image), where, image, path.parent)
        items.append(Example(full, caption, where))
    if not items:
        raise ValueError(f"{path}: no rows")
    _all_captions_empty(items, path)
    return items


def _jsonl_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(file:line, row)`` for each row of a ``.jsonl`` file; each must be a JSON object."""
    rows = []
    for lineno, line in jsonl_lines(path):
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: bad row ({exc})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: bad row (expected a JSON object, got {_kind(row)})")
        rows.append((where, row))
    return rows


def _csv_rows(path: Path, columns: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """``(file:line, row)`` for each record of a UTF-8 CSV file with a header row holding
    ``columns`` (comma separated, ``"`` quoted, as pandas and ``imagefolder`` read
    ``metadata.csv``), at the line where the record starts. A quoting error, a record whose
    field count is not the header's or a header without a column is refused naming its
    line: read leniently, a stray quote would join rows into one caption."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({exc.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    header_line = 0
    rows = []
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ValueError(f"{path}:{start}: bad CSV row ({exc})") from None
        if not any(field.strip() for field in record):
            continue  # a blank line, or a spreadsheet's empty row (``,,``)
        if header is None:
            header, header_line = record, start
            _check_header(header, columns, f"{path}:{start}")
            continue
        if len(record) != len(header):
            raise ValueError(
                f"{path}:{start}: bad row ({len(record)} fields, the header on line "
                f"{header_line} has {len(header)})"
            )
        rows.append((f"{path}:{start}", dict(zip(header, record, strict=True))))
    return rows


def _check_header(header: Sequence[str], columns: Sequence[str], where: str) -> None:
    """Refuse a CSV header without one of ``columns``, or holding one twice: a record read
    into a dict keeps the last of two same-named fields, where pandas (and ``imagefolder``)
    keep the first, so either could be the one meant."""
    for column in columns:
        places = [str(i) for i, name in enumerate(header, 1) if name == column]
        if not places:
            has = ", ".join(repr(name) for name in header)
            raise ValueError(f"{where}: no column {column!r} (it has {has})")
        if len(places) > 1:
            raise ValueError(
                f"{where}: column {column!r} is named twice (fields {' and '.join(places)})"
            )


class HFDatasetSource:
    """A Hugging Face ``datasets`` dataset (a hub name or a local ``save_to_disk`` folder)."""

    def __init__(self, name: str, split: str, image_column: str, caption_column: str):
        try:
            import datasets
        except ImportError as exc:
            raise ImportError(
                "data.dataset_type 'hf' needs the 'datasets' package: pip install 'dsharp[data]'"
            ) from exc
        saved = user_path(name)  # a save_to_disk folder (``~`` expanded as elsewhere)
        if saved.is_dir():
            ds = datasets.load_from_disk(str(saved))
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = datasets.load_dataset(name, split=split)
        for column in (image_column, caption_column):
            if column not in ds.column_names:
                raise ValueError(f"dataset {name}: no column '{column}' (has {ds.column_names})")
        self.ds, self.image_column, self.caption_column = ds, image_column, caption_column
        self.name = name

    def __len__(self) -> int:
        return len(self.ds)

    def get(self, index: int) -> tuple[Image.Image, str]:
        where = f"dataset {self.name} row {index}"
        try:
            row = self.ds[index]
        except (OSError, ValueError, SyntaxError) as exc:  # an image the dataset cannot decode
            raise ValueError(f"{where}: cannot read the row: {exc}") from None
        image = row[self.image_column]
        caption = _caption(row[self.caption_column], where, self.caption_column)
        if isinstance(image, dict) and image.get("bytes") is None and image.get("path"):
            image = image["path"]  # an image column read undecoded: the file's path
        if isinstance(image, str):
            return read_rgb(image, where), caption
        if isinstance(image, dict) and isinstance(image.get("bytes"), bytes):
            image = image["bytes"]  # undecoded (a parquet struct, ``Image(decode=False)``)
        if isinstance(image, bytes | bytearray):  # the encoded file itself
            return read_rgb(io.BytesIO(image), where, f"({len(image)} bytes)"), caption
        if not isinstance(image, Image.Image):
            try:
                image = Image.fromarray(np.asarray(image))
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"{where}: image column {self.image_column!r} holds {_kind(image)}, "
                    f"not an image ({exc})"
                ) from None
        try:
            return as_rgb(image), caption
        except ValueError as exc:  # pixels of no known range (see image_files.wide_to_8bit)
            raise ValueError(f"{where}: cannot read the image: {exc}") from None


def to_tensor(image: Image.Image, height: int, width: int) -> torch.Tensor:
    """Resize the short side and centre-crop to ``height x width``; ``(3, H, W)`` in [0, 1]."""
    scale = max(height / image.height, width / image.width)
    if scale != 1.0 or image.size != (width, height):
        size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        image = image.crop((left, top, left + width, top + height))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def open_image_text(
    dataset: str, dataset_type: str, split: str, image_column: str, caption_column: str
) -> ImageTextSource:
    """Pick the source for ``data.dataset`` (``auto``: folder, ``.jsonl`` file, else a hub name)."""
    from dsharp.recipe_data import dataset_kind

    kind = dataset_kind(dataset, dataset_type)
    if kind in ("folder", "jsonl"):
        key = _local_key(dataset, kind, image_column, caption_column)
        return _CHECKED.pop(key, None) or _open_local(*key[:4])
    return HFDatasetSource(dataset, split, image_column, caption_column)


def check_local_data(
    dataset: str, dataset_type: str, image_column: str, caption_column: str
) -> None:
    """Open a local folder or ``.jsonl`` dataset now, so that a bad row (a missing or empty
    image, a caption that is not text) is refused before the model loads; the index is kept
    for :func:`open_image_text` to take, so the rows are stat'ed once. A Hugging Face
    dataset is left to open with the model (it may need a download)."""
    from dsharp.recipe_data import dataset_kind

    kind = dataset_kind(dataset, dataset_type)
    if kind not in ("folder", "jsonl"):
        return
    key = _local_key(dataset, kind, image_column, caption_column)
    if key not in _CHECKED:
        _CHECKED.clear()  # one dataset's index at a time
        _CHECKED[key] = _open_local(*key[:4])


#: The local dataset :func:`check_local_data` opened, by :func:`_local_key`, until opened
#: for training.
_CHECKED: dict[tuple[Any, ...], ImageTextSource] = {}


def _local_key(dataset: str, kind: str, image_column: str, caption_column: str) -> tuple:
    """What a local dataset's index depends on: its path, columns and the listing's stamp
    (the file's, or the folder's and its metadata files', size and modification time)."""
    path = user_path(dataset)
    stamps = [path, *(path / name for name in METADATA_FILES)] if kind == "folder" else [path]
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None for p in stamps)
    return (path, kind, image_column, caption_column, stamp)


def _open_local(path: Path, kind: str, image_column: str, caption_column: str) -> ImageTextSource:
    from dsharp.recipe_data import folder_image_column

    if kind == "folder":
        return FolderSource(path, folder_image_column(image_column), caption_column)
    return JsonlSource(path, image_column, caption_column)


def apply_empty_prompts(prompts: Sequence[str], prob: float, rng: random.Random) -> list[str]:
    """Blank each conditioning prompt with probability ``prob`` (the paper used 20%)."""
    return ["" if prob > 0 and rng.random() < prob else p for p in prompts]


class TrainingData:
    """Draws each process's micro-batches for the engine from the recipe's ``data`` section.

    ``kind`` is the method's ``data_kind``: ``"prompts"`` (online methods) or ``"images"``.
    """

    def __init__(self, data_cfg: Any, kind: str, height: int, width: int, seed: int):
        self.cfg, self.kind = data_cfg, kind
        self.height, self.width, self.seed = height, width, seed
        self.prompts: list[str] = []
        self.source: ImageTextSource | None = None
        if kind == "prompts":
            self.prompts = self._prompt_list()
        elif kind == "images":
            if data_cfg.dataset:
                self.source = open_image_text(
                    data_cfg.dataset,
                    data_cfg.dataset_type,
                    data_cfg.split,
                    data_cfg.image_column,
                    data_cfg.caption_column,
                )
            elif data_cfg.generator != "shapes":
                raise ValueError("data: this method needs data.dataset or data.generator: shapes")
        else:
            raise ValueError(f"unknown data kind '{kind}'")

    def _prompt_list(self) -> list[str]:
        cfg = self.cfg
        prompts = list(cfg.prompts or [])
        if cfg.prompts_file:
            prompts += read_prompt_file(cfg.prompts_file)
        if not prompts and cfg.generator == "shapes":
            prompts = self._shapes_prompts()
        if not prompts:
            raise ValueError(
                "data: this method needs data.prompts, data.prompts_file or data.generator"
            )
        return prompts

    def _shapes_sets(self) -> dict[str, list[str]]:
        """The shapes world's prompts per category that ``data.split`` names."""
        from dsharp.shapes import grammar_prompt_sets, prompt_sets

        return grammar_prompt_sets() if self.cfg.split == "grammar" else prompt_sets("train")

    def _shapes_prompts(self) -> list[str]:
        """The shapes world's prompts that ``data.split`` names (train or grammar)."""
        return [p for group in self._shapes_sets().values() for p in group]

    @cached_property
    def _category_groups(self) -> list[tuple[str, list[str]]]:
        """The split's non-empty per-category prompt lists with their category, built once
        per run."""
        return [(name, group) for name, group in self._shapes_sets().items() if group]

    @cached_property
    def _category_weights(self) -> list[float]:
        """The weight of each of :attr:`_category_groups` (``data.balance`` as a mapping; both
        splits hold prompts of every category, so a weight above 0 always has prompts)."""
        return [self.cfg.balance.get(name, 0.0) for name, _ in self._category_groups]

    def _draw_prompts(self, batch_size: int, rng: random.Random) -> list[str]:
        """``batch_size`` prompts: uniform over prompts, or over categories first when
        ``data.balance`` is ``category`` (or category weights): the grammar split holds 12
        single-object prompts of 817, so uniform prompts show one in 1.5% of draws, though
        the benches weigh each category alike."""
        balance = self.cfg.balance
        if balance == "prompt":
            return [rng.choice(self.prompts) for _ in range(batch_size)]
        groups = self._category_groups
        if balance == "category":  # all alike: the draws of runs made before weights existed
            return [rng.choice(rng.choice(groups)[1]) for _ in range(batch_size)]
        weights = self._category_weights
        return [rng.choice(rng.choices(groups, weights)[0][1]) for _ in range(batch_size)]

    def batch(self, batch_size: int, step: int, process: int, micro: int) -> Batch:
        """The micro-batch ``micro`` of optimisation step ``step`` on process ``process``."""
        from dsharp.methods.base import Batch

        rng = batch_rng(self.seed, step, process, micro)
        if self.kind == "prompts":
            prompts = self._draw_prompts(batch_size, rng)
            images = None
        elif self.source is not None:
            pairs = [self.source.get(rng.randrange(len(self.source))) for _ in range(batch_size)]
            prompts = [caption for _, caption in pairs]
            images = torch.stack([to_tensor(img, self.height, self.width) for img, _ in pairs])
        else:
            images, prompts = self._shapes_batch(batch_size, rng)
        cond = apply_empty_prompts(prompts, self.cfg.empty_prompt_prob, rng)
        return Batch(prompts=prompts, cond_prompts=cond, images=images)

    def _shapes_batch(self, batch_size: int, rng: random.Random) -> tuple[torch.Tensor, list[str]]:
        from dsharp.shapes import render, sample_scene

        if not self.prompts:
            self.prompts = self._shapes_prompts()
        prompts = self._draw_prompts(batch_size, rng)
        np_rng = np.random.default_rng(rng.getrandbits(63))
        if self.height != self.width:
            raise ValueError(
                "data.generator shapes renders square images: set train.height == train.width"
            )
        arrays = [render(sample_scene(p, np_rng), size=self.height) for p in prompts]
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
        noise = self.cfg.caption_noise
        if noise:  # draws nothing when off, so noise-free batches stay as they were
            prompts = [_noisy_caption(p, noise, np_rng) for p in prompts]
        return images, prompts


def _noisy_caption(prompt: str, prob: float, rng: np.random.Generator) -> str:
    """``prompt``, or with probability ``prob`` a perturbed train caption (see
    :func:`dsharp.shapes.data.perturb_caption`): the image stays drawn from ``prompt``."""
    from dsharp.shapes import parse
    from dsharp.shapes.data import perturb_caption

    if rng.random() >= prob:
        return prompt
    return perturb_caption(parse(prompt), rng, "train").to_prompt()
