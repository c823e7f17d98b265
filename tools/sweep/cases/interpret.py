"""`interpret --images`: a folder scan that must be confined like every other (item 5), and description pools
that are not text files."""
from __future__ import annotations

from ..core import ANY_SAFE, ERROR, REFUSE_OR_WARN, Case, Run
from ..fixtures import class_folders, fifo, png, raw_png, symlink, write
from .common import INTERPRET_FAST, report_check, run_dir

KLASS = "interpret"
ALL_IMAGES = ["--max-images", "64"]  # every image of the folder is used, the bad one included (not a seeded subset)


def _case(cid, what, why, expect, make, extra=(), warn=(), item="", timeout=120.0) -> Case:
    """``make(ctx, images_folder)`` adds the bad part to a folder of 4 valid images."""
    def build(ctx):
        imgs = class_folders(ctx.root / "imgs", per_class=2)
        make(ctx, imgs)
        out = ctx.root / "report"
        return Run(["interpret", "--adapter", str(run_dir(ctx) / "adapter"), "--images", str(imgs), "--output",
                    str(out), *INTERPRET_FAST, *ALL_IMAGES,
                    *(str(ctx.root / "pool.txt") if a == "POOL" else a for a in extra)],
                   check=report_check(out), warn_mentions=list(warn),
                   keep=[imgs])

    return Case(f"interp-{cid}", KLASS, what, why, expect, build, needs=("run",), timeout=timeout, item=item,
                slow=True)


CASES: list[Case] = []
add = CASES.append

WHY_CONFINE = ("item 5: `interpret --images` follows a symlink out of its folder while every other scanning command "
               "refuses it; refuse it the same way (or only with --follow-symlinks)")
add(_case("symlink-file", "--images folder holding a symlink to an image outside it", WHY_CONFINE, ERROR,
          lambda ctx, d: symlink(d / "benign" / "link.png", ctx.outside / "secret.png"), item="5"))
add(_case("symlink-dir", "--images folder holding a symlinked folder leading outside",
          "item 5: a symlinked folder leading out is refused like elsewhere, or not followed at all (the audit "
          "hook shows whether anything outside was read)", ANY_SAFE,
          lambda ctx, d: (png(ctx.outside / "more" / "m0.png", seed=9), symlink(d / "more", ctx.outside / "more")),
          item="5"))
add(_case("symlink-dev-zero", "--images folder holding x.png -> /dev/zero", "leads outside: refused, never read "
          "forever", ERROR, lambda ctx, d: symlink(d / "benign" / "zero.png", "/dev/zero"), item="5", timeout=60))
add(_case("symlink-loop", "--images folder holding a symlink to its own parent (a loop)",
          "the scan must terminate: refused (leads out of nothing new) or the loop skipped", ANY_SAFE,
          lambda ctx, d: symlink(d / "benign" / "loop", d), timeout=60))
add(_case("fifo", "--images folder holding a FIFO named x.png", "no hang: skipped with a message or refused",
          ANY_SAFE, lambda ctx, d: fifo(d / "benign" / "pipe.png"), timeout=60))
add(_case("bomb", "--images folder holding a 1x60000 PNG", "item 6: bounded before decoding: refused or dropped "
          "with a warning naming it", REFUSE_OR_WARN,
          lambda ctx, d: write(d / "benign" / "tall.png", raw_png(1, 60000)),
          warn=("tall.png",), item="6"))
add(_case("truncated", "--images folder holding a truncated PNG", "refused or dropped with a warning naming it",
          REFUSE_OR_WARN, lambda ctx, d: write(d / "benign" / "cut.png",
                                               png(ctx.root / "t.png", seed=5, size=64).read_bytes()[:200]),
          warn=("cut.png",)))
add(_case("pool-empty", "--pool naming an empty text file", "no descriptions: one line naming --pool", ERROR,
          lambda ctx, d: write(ctx.root / "pool.txt", ""), extra=("--pool", "POOL")))
add(_case("pool-binary", "--pool naming a binary file", "not text: one line naming the file", ERROR,
          lambda ctx, d: write(ctx.root / "pool.txt", bytes(range(256)) * 8), extra=("--pool", "POOL")))
add(_case("pool-fifo", "--pool naming a FIFO", "no hang: one line", ERROR, lambda ctx, d: fifo(ctx.root / "pool.txt"),
          extra=("--pool", "POOL"), timeout=60))


def _images_only(cid, what, why, expect, folder_fn, item="", timeout=60.0) -> Case:
    def build(ctx):
        out = ctx.root / "report"
        return Run(["interpret", "--adapter", str(run_dir(ctx) / "adapter"), "--images", folder_fn(ctx), "--output",
                    str(out), *INTERPRET_FAST], check=report_check(out))

    return Case(f"interp-{cid}", KLASS, what, why, expect, build, needs=("run",), timeout=timeout, item=item)


add(_images_only("empty-folder", "--images an empty folder", "no images: one clear line", ERROR,
                 lambda ctx: str((ctx.root / "none").mkdir() or ctx.root / "none")))
add(_images_only("dev", "--images /dev (device files, FIFOs)", "no images there: one clear line, no hang on devices",
                 ERROR, lambda ctx: "/dev"))
add(_images_only("missing", "--images a folder that does not exist", "one clear line", ERROR,
                 lambda ctx: str(ctx.root / "nope")))
