"""The training loop: sample, score, loss, step, log, checkpoint — written out once, over
accelerate, for every training method.

The same code runs on one CPU, one GPU, or data-parallel under ``accelerate launch``
(DDP, or FSDP/DeepSpeed through accelerate's own config): each process draws its own
micro-batches, accelerate averages gradients.
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed

from dsharp import checkpoints as ckpts
from dsharp.base_fingerprint import STATE_KEY as BASE_FINGERPRINT
from dsharp.base_fingerprint import BaseMismatch, base_fingerprint, check_base_fingerprint
from dsharp.builders import build_model, build_reward, resolution
from dsharp.curves import CURVES_PNG, plot_training_curves
from dsharp.data import TrainingData, torch_generator
from dsharp.environment import environment_record, run_environment
from dsharp.folder_lock import claimed_folder
from dsharp.interrupts import StopRequests, TrainingInterrupted
from dsharp.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_jsonl,
    sync_file,
)
from dsharp.method_rounds import RoundLoad, load_round, save_round
from dsharp.methods.factory import build_method
from dsharp.preflight import check_runtime
from dsharp.progress import TrainProgress
from dsharp.resume import launch_resume
from dsharp.step_metrics import once_per_round, plain_row, pool_rows


def _check_report_size(recipe: Any, model: Any) -> None:
    """The report after training samples at ``sample.height/width`` (else the training
    size): a size the model cannot draw is refused now, not after the whole run."""
    from dsharp.posttrain import eval_settings, wants_report

    if wants_report(recipe):
        settings = eval_settings(recipe)
        resolution(model, settings.height, settings.width)


def make_optimizer(params: list[torch.nn.Parameter], train: Any) -> torch.optim.Optimizer:
    """The optimizer ``train.optimizer`` names; bitsandbytes is imported only for
    ``adamw8bit``, so the other two need no GPU package."""
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, weight_decay=train.weight_decay)
    if train.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        cls = bnb.optim.AdamW8bit
    else:
        cls = torch.optim.AdamW
    return cls(
        params,
        lr=train.lr,
        betas=(train.adam_beta1, train.adam_beta2),
        eps=train.adam_eps,
        weight_decay=train.weight_decay,
    )


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, train: Any
) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's schedule, stepped once per optimizer step (the engine steps it)."""
    from diffusers.optimization import get_scheduler

    name = train.lr_scheduler
    if name == "constant" and train.warmup_steps:
        # diffusers' "constant" ignores num_warmup_steps; the recipe asked for a warmup.
        name = "constant_with_warmup"
    return get_scheduler(
        name,
        optimizer=optimizer,
        num_warmup_steps=train.warmup_steps,
        num_training_steps=train.max_steps,
    )


#: Schedules whose rates depend on ``train.max_steps``: a resume that changes it lays them out
#: anew (see :func:`reschedule`).
DECAYING_SCHEDULES = ("linear", "cosine")


def reschedule(lr_scheduler: Any) -> list[float]:
    """Set the optimizer's rates (and the scheduler's last rates) to the schedule's as built
    for this recipe, at the step the scheduler was restored to; returns them.

    ``load_state`` restores each param group's ``lr`` and the scheduler's ``_last_lr`` as the
    checkpoint's run left them, but the schedule's lambdas (closures: a ``LambdaLR`` saves
    ``None`` for them) are the ones built now. When a resume changes ``train.max_steps``,
    those two disagree, and the first resumed step would train at the old schedule's rate
    (0 after the last step of a linear or cosine schedule). With the same ``max_steps``
    this computes what the scheduler's own step computed (``base_lr * lambda(step)``)."""
    inner = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's wrapper
    step = inner.last_epoch
    rates = [base * rule(step) for rule, base in zip(inner.lr_lambdas, inner.base_lrs, strict=True)]
    for group, rate in zip(inner.optimizer.param_groups, rates, strict=True):
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(float(rate))
        else:
            group["lr"] = rate
    inner._last_lr = [
        g["lr"].clone() if isinstance(g["lr"], torch.Tensor) else g["lr"]
        for g in inner.optimizer.param_groups
    ]
    return rates


def _sum_over_processes(accelerator: Accelerator, value: int) -> int:
    """``value`` summed over every process (a stop request)."""
    if accelerator.num_processes == 1:
        return value
    gathered = accelerator.gather(torch.tensor([value], device=accelerator.device))
    return int(gathered.sum().item())


def _gather_step(
    accelerator: Accelerator, rows: list[dict[str, float]], evaluations: int
) -> tuple[list[dict[str, float]], int]:
    """Every process's micro-batch rows and reward evaluations of a step, in one collective:
    the rows, not their means, so that :func:`~dsharp.step_metrics.pool_rows` pools them
    exactly; the same on every process, in process order."""
    if accelerator.num_processes == 1:
        return rows, evaluations
    from accelerate.utils import gather_object

    parts = gather_object([(rows, evaluations)])
    return [row for own, _ in parts for row in own], sum(count for _, count in parts)


#: Versions, machine and reward plugins of the run (:mod:`dsharp.environment`).
ENVIRONMENT_JSON = "environment.json"


def mid_round_note(
    method: Any, step: int, grad_accum: int, unread: str | None = None
) -> str | None:
    """What a resume at ``step`` changes for a method that trains on a round of samples
    over several calls (DDPO, D3PO), where the checkpoint did not keep the round (written
    by an older dsharp, or on another number of processes): a resume inside one samples a
    fresh round and the run goes on differently from there. ``unread``: the checkpoint
    kept its round in a format this dsharp does not load (:class:`RoundLoad`)."""
    if unread is not None:
        return (
            f"{unread}: the resumed run samples a fresh round, so it differs from an "
            "uninterrupted run from here on"
        )
    per_round = getattr(method, "calls_per_round", None)
    if not per_round or (step * grad_accum) % per_round == 0:
        return None
    return (
        f"step {step} falls inside one of {method.name}'s rounds of samples "
        f"({per_round} training calls each), which this checkpoint does not keep: the resumed "
        "run samples a fresh round, so it differs from an uninterrupted run from here on"
    )


def processes_note(saved: Any, processes: int, batch_size: int) -> str | None:
    """What a resume on another number of processes changes: each step averages the
    gradients of one batch per process, and a process's batches and noises are drawn for
    its index, so the run goes on with another effective batch and other draws (None with
    the same number, or a checkpoint written before ``trainer_state.json`` kept it)."""
    if not isinstance(saved, int) or saved == processes:
        return None

    def procs(count: int) -> str:
        return f"{count} process{'es' if count != 1 else ''}"

    batches = f"{processes} batch{'es' if processes != 1 else ''}"

    return (
        f"the checkpoint's run trained on {procs(saved)}, this one on {procs(processes)}: "
        f"each step now averages the gradients of {batches} (not {saved}) of train.batch_size "
        f"{batch_size}, drawn otherwise, so the run differs from an uninterrupted one from "
        f"here on (resume on {procs(saved)} to continue it)"
    )


def schedule_note(train: Any, saved_max_steps: Any, step: int, rate: float) -> str | None:
    """What a resume that changes ``train.max_steps`` does to a decaying schedule: it is laid
    out anew over the new length, so the rates from here on are not the checkpoint's run's
    (None when nothing changes: the same length, a constant schedule, or a checkpoint written
    before ``trainer_state.json`` kept ``max_steps``)."""
    if train.lr_scheduler not in DECAYING_SCHEDULES:
        return None
    if not isinstance(saved_max_steps, int) or saved_max_steps == train.max_steps:
        return None
    return (
        f"train.max_steps is {train.max_steps}, the checkpoint's run planned {saved_max_steps}: "
        f"its {train.lr_scheduler} learning-rate schedule is now laid out over "
        f"{train.max_steps} steps, so step {step + 1} trains at lr {rate:g}"
    )


def _load_checkpoint(acc: Accelerator, checkpoint: Path, optimizer: Any) -> None:
    """``acc.load_state`` of the checkpoint a run resumes from; a file in it that cannot be
    read (torch's words name none) is one error naming the checkpoint and the way on. A
    whole checkpoint of another model or optimizer (a branch, ``train.resume=CHECKPOINT``,
    whose run's recipe is not there to compare) is told apart: it is not damaged."""
    import pickle

    from dsharp.error_text import one_line
    from dsharp.trained_fit import TrainedMisfit

    hyperparameters = [set(group) for group in optimizer.param_groups]
    try:
        acc.load_state(str(checkpoint))
    except TrainedMisfit as err:  # every checkpoint of the run alike: no older one helps
        raise TrainedMisfit(f"train.resume: {err}") from err
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        reason = one_line(err)
        if isinstance(err, ValueError) and reason.startswith(_OPTIMIZER_MISFIT):
            raise ValueError(_misfit(checkpoint, reason, "model")) from err
        if str(checkpoint) not in reason:
            reason = f"{checkpoint}: cannot be loaded ({reason})"
        raise ValueError(
            f"train.resume: {reason} ({ckpts.damaged_checkpoint_advice(checkpoint)})"
        ) from err
    # torch takes the saved groups' settings as they are: another optimizer's lack this
    # one's (SGD's momentum), and the first step failed with a bare KeyError naming it.
    for wanted, group in zip(hyperparameters, optimizer.param_groups, strict=False):
        lacking = sorted((wanted - set(group)) & _ALGORITHM_SETTINGS)
        if lacking:
            reason = f"its optimizer state has no {', '.join(lacking)}: another train.optimizer's"
            raise ValueError(_misfit(checkpoint, reason, "optimizer"))


#: The group settings that tell the allowed optimizers apart (AdamW's, SGD's): only their
#: absence means another optimizer's state. A newer optimizer version's extra settings
#: (bitsandbytes reads its newer ones with defaults) must not refuse an older checkpoint.
_ALGORITHM_SETTINGS = frozenset({"betas", "eps", "momentum", "dampening", "nesterov"})


#: How torch's ``Optimizer.load_state_dict`` begins the ValueError for saved parameter
#: groups of other number or sizes than the optimizer's (a model with other parameters).
_OPTIMIZER_MISFIT = "loaded state dict"


def _misfit(checkpoint: Path, reason: str, part: str) -> str:
    """One line for a whole checkpoint written for another optimizer, or for another set of
    trained parameters (``part`` "model": torch's parameter groups of other sizes, which no
    choice of train.optimizer mends); a branch from another run's checkpoint, not damaged,
    so falling back to an older checkpoint is no way on."""
    if part == "model":
        way = "a run that trained this recipe's model (model.pretrained, model.lora_rank)"
    else:
        way = "a run with this recipe's train.optimizer, or set it to the checkpoint's"
    return (
        f"train.resume: {checkpoint} does not fit this recipe's {part} ({reason}): resume "
        f"from a checkpoint of {way}"
    )


def _check_resume_fits(checkpoint: Path, recipe: Any) -> None:
    """A checkpoint whose UNet does not fit the recipe's base model (a run folder whose
    recipe.yaml was edited to match, or a branch from another model's run): said before the
    model loads."""
    from dsharp.trained_fit import TrainedMisfit, check_checkpoint_fits, check_lora_resume_fits

    run_dir = ckpts.run_dir_of(checkpoint)
    own_run = run_dir.resolve() == Path(recipe.output_dir).resolve()
    source = run_dir / "recipe.yaml" if own_run else "this recipe"
    try:
        check_checkpoint_fits(checkpoint, recipe.model, source, branch=not own_run)
        check_lora_resume_fits(checkpoint, recipe.model, source, branch=not own_run)
    except TrainedMisfit as err:
        raise TrainedMisfit(f"train.resume: {err}") from None


def _check_resume_base(checkpoint: Path, recipe: Any, fingerprint: dict | None = None) -> None:
    """A checkpoint trained on other base weights than the recipe's base model has, though
    of the same shapes (a recipe.yaml edited to match, a base folder replaced): said before
    the base loads where its files tell (``fingerprint`` None), else once it has loaded,
    before the checkpoint's weights are applied to it."""
    from dsharp.base_files import files_fingerprint

    if fingerprint is None:
        fingerprint = files_fingerprint(checkpoint, recipe.model)
        if fingerprint is None:
            return
    run_dir = ckpts.run_dir_of(checkpoint)
    own_run = run_dir.resolve() == Path(recipe.output_dir).resolve()
    source = run_dir / "recipe.yaml" if own_run else "this recipe"
    model = recipe.model
    try:
        check_base_fingerprint(
            checkpoint,
            fingerprint,
            model.pretrained,
            source,
            branch=not own_run,
            revision=model.revision,
        )
    except BaseMismatch as err:
        raise BaseMismatch(f"train.resume: {err}") from None


def _unsaved(run_dir: Path, step: int, err: BaseException) -> str:
    """Why step ``step``'s checkpoint is not in ``run_dir`` (a full disk, say), and where a
    resume would start: its temp folder is gone, the checkpoints before it are whole."""
    from dsharp.error_text import one_line

    final = ckpts.checkpoint_dir(run_dir, step)
    if final in ckpts.list_checkpoints(run_dir):  # renamed into place; what came after failed
        return f"{final}: checkpoint saved, but what follows the save failed ({one_line(err)})"
    previous = ckpts.latest_checkpoint(run_dir)
    resumes = (
        f"train.resume=latest continues from {previous.name}"
        if previous is not None
        else "no checkpoint was saved before it"
    )
    return f"{final}: checkpoint not saved ({one_line(err)}); {resumes}"


def _forget_other_precision(mixed_precision: str) -> None:
    """Let this run set its own mixed precision when an earlier run in this process set
    another (``dsharp reproduce`` trains a study's rows one after another): accelerate keeps
    the first ``Accelerator``'s precision process-wide and refuses any other with a
    ValueError. Only that state is dropped; the process group (``PartialState``) stays."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision", mixed_precision) != mixed_precision:
        AcceleratorState._reset_state()


class Trainer:
    """Holds one run's objects; :meth:`run` is the loop.

    ``report_follows``: the post-training report is written next, and draws the final
    training curves with report.md (:func:`dsharp.posttrain.post_train_report`), so that a
    report that fails leaves the previous curves beside the previous report."""

    def __init__(self, recipe: Any, *, progress: bool = True, report_follows: bool = False):
        from dsharp.model_names import absolute_model_source

        self.report_follows = report_follows

        check_runtime(recipe)
        recipe = recipe.model_copy(deep=True)  # saved with its model folder absolute
        recipe.model.pretrained = absolute_model_source(recipe.model.pretrained)
        self.recipe = recipe
        self.run_dir = Path(recipe.output_dir)
        train = recipe.train
        # Before anything loads: a resume must continue the run that wrote the checkpoint.
        resume_from = launch_resume(recipe)  # one checkpoint for every process
        if resume_from is not None:
            ckpts.check_resume_files(resume_from)
            _check_resume_fits(resume_from, recipe)
            _check_resume_base(resume_from, recipe)  # from the base's files, where they tell
        _forget_other_precision(train.mixed_precision)
        self.accelerator = Accelerator(
            mixed_precision=train.mixed_precision,
            gradient_accumulation_steps=train.grad_accum,
            # The engine steps the LR scheduler once per optimizer step itself; accelerate's
            # default would step it once per process per step under data parallelism.
            step_scheduler_with_optimizer=False,
            log_with=list(train.trackers) or None,
            project_config=ProjectConfiguration(
                project_dir=str(self.run_dir), logging_dir=str(self.run_dir / "logs")
            ),
        )
        # Held by the main process until the run ends, taken before the model loads so that
        # a second process into this folder is refused at once rather than after the load.
        self._folder = ExitStack()
        if self.accelerator.is_main_process:
            self._folder.enter_context(claimed_folder(self.run_dir, "output_dir"))
        try:
            self._set_up(recipe, resume_from, progress)
        except BaseException:
            self.release_folder()
            raise

    def _set_up(self, recipe: Any, resume_from: Path | None, progress: bool) -> None:
        from dsharp.recipe_io import recipe_to_yaml

        train = recipe.train
        acc = self.accelerator
        set_seed(train.seed, device_specific=True)
        # Methods that need no reward (finetune) still report one when the recipe names it.
        # Built before the model: a reward that cannot be built (no API key, no weights)
        # must not cost the model's load first. Under its own RNG state, so that the model's
        # initialisation (LoRA) and all that follows draw as they would without it.
        with torch.random.fork_rng(devices=[]):  # the CPU's: models initialise there
            self.reward = build_reward(recipe.rewards) if recipe.rewards else None
        self.model = build_model(recipe.model, acc.device)
        # of the base as loaded, before training (or a resumed checkpoint) changes it: each
        # checkpoint keeps it, so that its later loads can tell other base weights
        self.base_fingerprint = base_fingerprint(
            self.model, recipe.model.pretrained, recipe.model.revision
        )
        if resume_from is not None:
            _check_resume_base(resume_from, recipe, self.base_fingerprint)
        self.height, self.width = resolution(self.model, train.height, train.width)
        _check_report_size(recipe, self.model)
        self.method = build_method(recipe.method, self.model, self.reward, self.height, self.width)
        self.data = TrainingData(
            recipe.data, self.method.data_kind, self.height, self.width, train.seed
        )
        if self.method.needs_reference:
            # Snapshot the reference (for full fine-tuning, a frozen copy) before any
            # weights change, including those a resumed checkpoint loads.
            with self.model.reference():
                pass
        params = self.model.trainable_parameters()
        if not params:
            raise ValueError("model: no trainable parameters")
        self.params = params
        optimizer = make_optimizer(params, train)
        lr_scheduler = make_lr_scheduler(optimizer, train)
        self.unet, self.optimizer, self.lr_scheduler = acc.prepare(
            self.model.unet, optimizer, lr_scheduler
        )
        acc.register_save_state_pre_hook(self._save_model_hook)
        acc.register_load_state_pre_hook(self._load_model_hook)
        self.start_step = 0
        # Reward evaluations that steered training so far (all processes): the budget that
        # Table 1 holds equal across methods. Logged cumulatively as ``reward_evals``.
        self.counts_reward = self.reward is not None and self.method.trains_on_reward
        self.reward_evals = 0
        schedule = None  # on a resume that changes the LR schedule: what to say about it
        processes = None  # on a resume on another number of processes: the same
        kept_round = RoundLoad(False)  # a round of samples in progress restored (DDPO, D3PO)
        if resume_from is not None:
            _load_checkpoint(acc, resume_from, self.optimizer)
            state = ckpts.resume_state(resume_from)
            self.start_step = state["step"]
            self.reward_evals = state.get("reward_evals", 0)
            self.method.load_state_dict(state.get("method_state", {}))
            rate = reschedule(self.lr_scheduler)[0]
            schedule = schedule_note(train, state.get("max_steps"), self.start_step, rate)
            processes = processes_note(state.get("processes"), acc.num_processes, train.batch_size)
            # each process kept its own round; another method's (a branch from a checkpoint
            # kept without its recipe.yaml) is not this one's to train on
            same = (state.get("processes"), state.get("method"))
            if same == (acc.num_processes, self.method.name):
                kept_round = load_round(
                    self.method, resume_from, acc.process_index, acc.num_processes, acc.device
                )
        # a resume that trains (not one that only writes the report of a finished run)
        trains_on = resume_from is not None and self.start_step < train.max_steps
        if trains_on and acc.is_main_process:
            mid_round = (
                None
                if kept_round
                else mid_round_note(
                    self.method, self.start_step, train.grad_accum, kept_round.unread
                )
            )
            notes = [mid_round, schedule]
            notes.append(processes)
            for note in filter(None, notes):
                print(f"note: {note}", file=sys.stderr)
        if acc.is_main_process:
            atomic_write_text(self.run_dir / "recipe.yaml", recipe_to_yaml(recipe))
            names = [s.name for s in [*recipe.rewards, *(recipe.eval.rewards or [])]]
            environment = self.run_dir / ENVIRONMENT_JSON
            if resume_from is None or trains_on or not environment.exists():
                resumed_at = self.start_step if trains_on else None
                record = run_environment(environment, environment_record(names), resumed_at)
                atomic_write_json(environment, record)
            self._truncate_metrics(self.start_step)
        if train.trackers:
            from dsharp.recipe_io import recipe_to_dict

            acc.init_trackers(
                train.project,
                config=_flat_scalars(recipe_to_dict(recipe)),
                init_kwargs=tracker_init_kwargs(train.trackers, self.start_step),
            )
        self.show_progress = progress and acc.is_main_process

    # -- checkpoint hooks: the model part of accelerate's state goes through the adapter, so a
    # checkpoint holds one copy of the weights, loadable by ``dsharp sample --checkpoint``.
    def _save_model_hook(self, models, weights, output_dir) -> None:
        if self.accelerator.is_main_process:
            self.model.save_trained(Path(output_dir) / "model")
        weights.clear()

    def _load_model_hook(self, models, input_dir) -> None:
        models.clear()
        self.model.load_trained(Path(input_dir) / "model")

    def _truncate_metrics(self, step: int) -> None:
        """On resume, drop metric rows logged after the checkpoint (they will be redone); a
        fresh run starts an empty file, without reading a failed start's (maybe damaged)."""
        path = self.run_dir / "metrics.jsonl"
        rows = [r for r in read_jsonl(path) if r.get("step", 0) <= step] if step else []
        if path.exists():
            atomic_write_jsonl(path, rows)

    def save_checkpoint(self, step: int) -> None:
        """Save everything resume needs at ``step`` (weights, optimizer, RNG, method state),
        on every process, then mark it whole on the main one (see :mod:`dsharp.checkpoints`)."""
        acc = self.accelerator
        tmp = ckpts.temp_checkpoint_dir(self.run_dir, step)
        if acc.is_main_process:
            # The step's metrics row reaches the disk before its checkpoint: a power cut must
            # not keep the checkpoint and lose the row, which a resume never writes again.
            sync_file(self.run_dir / "metrics.jsonl")
            if tmp.exists():
                shutil.rmtree(tmp)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp))
            save_round(self.method, tmp, acc.process_index)
            acc.wait_for_everyone()
            if acc.is_main_process:
                state = {
                    "step": step,
                    "seed": self.recipe.train.seed,
                    "method": self.method.name,
                    "reward_evals": self.reward_evals,
                    # the length the LR schedule was laid out over (a resume may change it)
                    "max_steps": self.recipe.train.max_steps,
                    # each process draws its own batches: a resume on another count differs
                    "processes": acc.num_processes,
                    # the base's weights (a sample): a load onto other ones is refused
                    BASE_FINGERPRINT: self.base_fingerprint,
                }
                if method_state := self.method.state_dict():
                    state["method_state"] = method_state
                keep = self.recipe.train.keep_checkpoints
                ckpts.finalize_checkpoint(self.run_dir, step, state, keep)
        except BaseException as err:  # a second Ctrl-C mid-save: leave no half-written folder
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(err, OSError | RuntimeError):  # a full disk: torch names no file
                raise OSError(_unsaved(self.run_dir, step, err)) from err
            raise
        if not (step == self.recipe.train.max_steps and self.final_curves_to_report()):
            self.draw_curves()
        acc.wait_for_everyone()

    def final_curves_to_report(self) -> bool:
        """Whether the report that follows draws the final curves, with report.md: so that
        one that fails leaves the previous curves beside the previous report. With no report
        yet there is none to keep in step, and training draws them (a report that then
        fails leaves them)."""
        return self.report_follows and (self.run_dir / "report.md").exists()

    def draw_curves(self) -> None:
        """Refresh training_curves.png (main process), so that a long run can be watched as
        it goes. A figure is a convenience: failing to draw one must not end a long run."""
        if not self.accelerator.is_main_process:
            return
        try:
            plot_training_curves(self.run_dir / "metrics.jsonl", self.run_dir / CURVES_PNG)
        except Exception as exc:
            warnings.warn(f"training curves not drawn: {exc}", stacklevel=1)

    def train_step(self, step: int) -> dict[str, float]:
        """One optimizer update over ``train.grad_accum`` micro-batches; the metrics row for
        ``metrics.jsonl``, pooled over the micro-batches and the processes
        (:mod:`dsharp.step_metrics`)."""
        acc, train = self.accelerator, self.recipe.train
        self.unet.train()
        lr = self.lr_scheduler.get_last_lr()[0]  # the rate this step's update uses
        evals_before = self.reward.evaluations if self.counts_reward else 0
        rows = []
        for micro in range(train.grad_accum):
            batch = self.data.batch(train.batch_size, step, acc.process_index, micro)
            generator = torch_generator(train.seed, step, acc.process_index, micro)
            with acc.accumulate(self.unet):
                with acc.autocast():
                    loss, metrics = self.method.compute_loss(batch, self.unet, generator)
                acc.backward(loss)
                if acc.sync_gradients and train.max_grad_norm:
                    metrics["grad_norm"] = float(
                        acc.clip_grad_norm_(self.params, train.max_grad_norm)
                    )
                self.optimizer.step()
                if acc.sync_gradients:
                    self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            metrics["loss"] = loss.detach().item()
            rows.append(plain_row(metrics))
        evaluations = self.reward.evaluations - evals_before if self.counts_reward else 0
        rows, evaluations = _gather_step(acc, once_per_round(rows), evaluations)
        out = pool_rows(rows)
        out["lr"] = lr
        if self.counts_reward:
            self.reward_evals += evaluations
            out["reward_evals"] = self.reward_evals
        return out

    def release_folder(self) -> None:
        """Let another process train into the run folder: this one has stopped writing it."""
        self._folder.close()

    def run(self) -> Path:
        """Train to ``train.max_steps`` and return the run folder; the folder's lock is let go
        however training ends, so a later run (or a resume) can take it."""
        try:
            return self._run()
        finally:
            self.release_folder()

    def _run(self) -> Path:
        acc, train = self.accelerator, self.recipe.train
        progress = TrainProgress(train.max_steps, self.start_step, enabled=self.show_progress)
        with progress, StopRequests() as stop:
            for step in range(self.start_step + 1, train.max_steps + 1):
                started = time.perf_counter()
                metrics = self.train_step(step)
                metrics["step_time_s"] = time.perf_counter() - started
                row = {"step": step, **metrics}
                if acc.is_main_process and (step % train.log_every == 0 or step == train.max_steps):
                    append_jsonl(self.run_dir / "metrics.jsonl", row)
                    if train.trackers:
                        acc.log(metrics, step=step)
                progress.update(step, metrics)
                periodic = train.checkpoint_every and step % train.checkpoint_every == 0
                saved = periodic or step == train.max_steps  # the final model is always saved
                if saved:
                    self.save_checkpoint(step)
                # every process must agree to stop, or one would wait for the others forever
                if step < train.max_steps and _sum_over_processes(acc, int(stop.requested)):
                    if not saved:
                        self.save_checkpoint(step)
                    acc.end_training()
                    raise TrainingInterrupted(step, self.run_dir)
            # A stop asked for during the last step: training is complete and saved, but
            # what the command does next (the report's evaluations) was not asked for.
            if self.start_step < train.max_steps and _sum_over_processes(acc, int(stop.requested)):
                if self.final_curves_to_report():  # it will not now: drawn here instead
                    self.draw_curves()
                acc.end_training()
                raise TrainingInterrupted(train.max_steps, self.run_dir, complete=True)
        acc.wait_for_everyone()
        acc.end_training()
        return self.run_dir


def tracker_init_kwargs(trackers: list[str], start_step: int) -> dict[str, dict[str, Any]]:
    """accelerate's ``init_kwargs`` for the run's trackers. TensorBoard's writer purges the
    events of the steps after ``start_step`` (the checkpoint resumed, 0 for a fresh run):
    a run killed past its last checkpoint logged them, and this one logs them again, so
    TensorBoard would draw both, where ``metrics.jsonl`` keeps only the new rows."""
    return {"tensorboard": {"purge_step": start_step + 1}} if "tensorboard" in trackers else {}


def _flat_scalars(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Trackers want flat scalar hyperparameters."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_scalars(value, f"{name}."))
        elif isinstance(value, int | float | str | bool) or value is None:
            out[name] = value
        else:
            out[name] = str(value)
    return out


def train(recipe: Any, *, progress: bool = True, report_follows: bool = False) -> Path:
    """Run a recipe's training to ``train.max_steps``; returns the run folder.
    ``report_follows``: see :class:`Trainer`."""
    return Trainer(recipe, progress=progress, report_follows=report_follows).run()
