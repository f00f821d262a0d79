#!/usr/bin/env bash
# Reproduce the bundled default model (rainmamba_core/weights/default_tiny.pt) on a CPU.
#
#   scripts/train_default.sh [OUT_DIR]        (default OUT_DIR: runs/default_tiny)
#
# Eight stages of `rainmamba train --config tiny_cpu`, each starting from the previous stage's
# model_final.pt: larger crops (64² -> 96² -> 128² -> 128²), then the detail head (stage 5) and
# the PSNR loss (stages 6-8); then stage 9, `--config tiny_cpu_video`: real clean video with a
# random rain look per clip and the camera pipeline (generalisation), and stage 10,
# `--config tiny_cpu_sharp`: the same plus the sharp look of real camera rain, and stage 11,
# `--config tiny_cpu_composite` on 8-frame clips: the composite look of NTURain's rain; stage 11b,
# the same on larger crops, stage 12, that fine-tuned with real rain, and the default a blend of
# the weights of stages 11, 11b and 12 (`rainmamba blend`); stages 11-12 grow the detail head by
# the aligned previous frame (session 18); stages 13-15 show the head only the thin brightening of
# that difference and train in NTURain a2's looks, on larger crops and with real rain (session 25),
# three times with different seeds (session 26); stages 11-12 again with the thin cue (session 27),
# and the default blends the three seeds' average into those stages' soup. Stages 1-8
# take about 6.7 h on an idle 2-core CPU, stage 9 about 1 h (2,000 steps of 4 x 112² x 2 at about
# 0.5-0.6 it/s), stage 10 about 52 min (1,800 steps), stage 11 about 25-35 min (2,400 steps of one
# 8-frame clip), stage 11b about 55 min, stage 12 about 21 min, stages 13-15 about 30 min together per seed,
# the thin stages 11-12 about 95 min together (stage times in the model card); keep other CPU work
# off the machine meanwhile. Re-running the
# script skips finished stages and resumes an interrupted one exactly from its last checkpoint.
# The result is OUT_DIR/default_tiny.pt (the same file format as the bundled one).
#
# Environment: RAINMAMBA (the command; default `rainmamba`), RAINMAMBA_SHARED (where shared/ with
# data/camvid, data/carla_clean and data/clean_video_* live; default /work/shared), DRY_RUN=1
# (print the commands).
set -euo pipefail

out=${1:-runs/default_tiny}
run=${RAINMAMBA:-rainmamba}

stage() {
    local name=$1; shift
    local config=tiny_cpu
    if [ "${1:-}" = --config ]; then config=$2; shift 2; fi
    local dir="$out/$name"
    if [ -f "$dir/model_final.pt" ]; then
        echo "[train_default] $name: done already ($dir/model_final.pt)"
        return
    fi
    local cmd=("$run" train --config "$config" --out "$dir" --no-progress "$@")
    if [ -d "$dir" ] && ls "$dir"/ckpt_*.pt >/dev/null 2>&1; then
        cmd=("$run" train --resume "$dir" --no-progress)
    fi
    echo "[train_default] $name: ${cmd[*]}"
    if [ "${DRY_RUN:-0}" != 1 ]; then
        "${cmd[@]}"
    fi
}

stage stage1_64
stage stage2_96 model.init_from="$out/stage1_64/model_final.pt" \
    train.lr=3e-4 train.warmup_iters=50 train.iterations=1500 data.crop=96
stage stage3_128 model.init_from="$out/stage2_96/model_final.pt" \
    train.lr=3e-4 train.warmup_iters=50 train.iterations=4500 train.seed=3 data.crop=128 data.batch=2
stage stage4_128 model.init_from="$out/stage3_128/model_final.pt" \
    train.lr=2e-4 train.warmup_iters=50 train.iterations=2400 train.seed=4 data.crop=128 data.batch=2
# Stage 5 grows the model by the full-resolution detail head (zero output at the start);
# stage 6 adds the PSNR loss, which weights light rain as much as storm.
stage stage5_detail model.init_from="$out/stage4_128/model_final.pt" model.overrides.detail_channels=24 \
    train.lr=3e-4 train.warmup_iters=100 train.iterations=5000 train.seed=5 data.crop=128 data.batch=2
stage stage6_psnr model.init_from="$out/stage5_detail/model_final.pt" model.overrides.detail_channels=24 \
    loss.psnr=0.01 train.lr=2e-4 train.warmup_iters=50 train.iterations=2700 train.seed=6 data.crop=128 data.batch=2
# Stages 7-8 keep training with the PSNR loss at lower learning rates (its curve was still rising).
stage stage7_psnr model.init_from="$out/stage6_psnr/model_final.pt" model.overrides.detail_channels=24 \
    loss.psnr=0.01 train.lr=1.5e-4 train.warmup_iters=50 train.iterations=3600 train.seed=7 data.crop=128 data.batch=2
stage stage8_psnr model.init_from="$out/stage7_psnr/model_final.pt" model.overrides.detail_channels=24 \
    loss.psnr=0.01 train.lr=1e-4 train.warmup_iters=50 train.iterations=2000 train.seed=8 data.crop=128 data.batch=2
# Stage 9: generalisation. Real clean video (held-out videos never trained on), a random rain look
# per clip, blur/noise/JPEG after the rain, strides 1-8, reversal, cuts, 10 % clean clips.
stage stage9_video --config tiny_cpu_video model.init_from="$out/stage8_psnr/model_final.pt"
# Stage 10: the sharp streak look of real camera rain added to the random looks, a 60 dB ceiling
# on the PSNR loss and 7 % clean clips (stage 9 left real rain in place).
stage stage10_sharp --config tiny_cpu_sharp model.init_from="$out/stage9_video/model_final.pt"
# Stage 11: the dense, screen-blended 'composite' look measured on NTURain a2's residuals added to
# the random looks (20 % of the clips' base looks), on clips of 8 frames (one per batch) so that most
# of the loss falls on frames with a history: the model then leaves more of a sharp scene alone.
# From stage 11 on, the detail head also reads the previous frame moved onto the current one by
# phase correlation, as its difference to it (detail_previous + detail_align: a pan leaves the
# scene's lines out of that difference and the rain in it); its new inputs start at zero weights.
aligned=(model.overrides.detail_previous=true model.overrides.detail_align=true)
real_mix=("data.options.real_roots=[${RAINMAMBA_SHARED:-/work/shared}/data/real_rain_yard]" data.options.real_prob=0.25
          data.options.real_holdout=14 data.options.real_outside_weight=0.1)
blend() {  # base, fine-tune, share, the file; then options such as --set KEY=VALUE
    local base=$1 tuned=$2 alpha=$3 dest=$4; shift 4
    if [ -f "$dest" ]; then
        echo "[train_default] $(basename "$dest"): done already ($dest)"
        return
    fi
    local cmd=("$run" blend "$base" "$tuned" --alpha "$alpha" --out "$dest" "$@")
    echo "[train_default] $(basename "$dest"): ${cmd[*]}"
    if [ "${DRY_RUN:-0}" != 1 ]; then
        "${cmd[@]}"
    fi
}
# Stage 11b: stage 11's recipe on larger crops (160² instead of 112²: more context for the global
# scan, which runs over the whole frame at test time), from stage 10 again; about 55 min.
# Stage 12: stage 11b fine-tuned with real rain (a quarter of the clips from real_rain_yard's first
# 36 frames, self-supervised targets, the loss counting 0.1 outside the rain mask); about 21 min.
# Their soup is a blend of weights (a "model soup": every part descends from stage 10): stage 12
# pulled back 70 % towards stage 11b, then half of that with stage 11 (model card, "Training
# stages"). Run twice: with the aligned head (session 18; the soup stages 13-15 start from, the
# default of sessions 18-24) and with its thin cue (session 27, below).
soup_stages() {  # the stage directories' suffix, the two blends' files, then the detail head's options
    local x=$1 inner=$2 soup=$3; shift 3
    stage "stage11_$x" --config tiny_cpu_composite model.init_from="$out/stage10_sharp/model_final.pt" \
        "$@" data.frames=8 data.batch=1 train.seed=17
    stage "stage11b_$x" --config tiny_cpu_composite model.init_from="$out/stage10_sharp/model_final.pt" \
        "$@" data.frames=8 data.batch=1 data.crop=160 train.seed=17
    stage "stage12_$x" --config tiny_cpu_composite model.init_from="$out/stage11b_$x/model_final.pt" \
        "$@" data.frames=8 data.batch=1 data.crop=160 train.seed=21 train.lr=1e-4 train.iterations=1000 "${real_mix[@]}"
    blend "$out/stage11b_$x/model_final.pt" "$out/stage12_$x/model_final.pt" 0.3 "$out/$inner"
    blend "$out/stage11_$x/model_final.pt" "$out/$inner" 0.5 "$out/$soup"
}
soup_stages aligned crop160_real_blend.pt soup_session18.pt "${aligned[@]}"
# Session 25: the detail head is shown only the thin brightening of the aligned difference
# (detail_align_thin=5: this frame's streaks, not the last frame's rain nor the bands of scene one
# translation leaves). Stage 13: half the clips are procedural scenes in NTURain a2's looks
# (composite, nturain, sharp), from the session-18 soup; stage 14: the usual mix on 160² crops;
# stage 15: stage 14 fine-tuned with real rain (stage 12's options at 112²), each blended as
# 0.7 x stage 14 + 0.3 x stage 15 (the blend takes the fine-tune's detail_align_thin: it adds no
# weights). Session 26: the same three stages with two more seeds (b: 31, 37, 41; c: 43, 47, 53),
# the three seeds' blends averaged, and the default is the session-18 soup blended 70 % towards
# that average. About 12, 10 and 8 min per seed on an idle CPU.
thin_cue=("${aligned[@]}" model.overrides.detail_align_thin=5)
thin=("${thin_cue[@]}" data.frames=8 data.batch=1 train.lr=1e-4)
thin_seed() {  # suffix, then the seeds of stages 13, 14 and 15
    local x=$1
    stage "stage13${x}_thin_procedural" --config tiny_cpu_composite model.init_from="$out/soup_session18.pt" \
        "${thin[@]}" "train.seed=$2" train.iterations=1000 train.ckpt_interval=250 train.keep_last=4 \
        data.options.procedural_prob=0.5 "data.options.procedural_bases={composite: 0.5, nturain: 0.25, sharp: 0.25}"
    stage "stage14${x}_thin_crop160" --config tiny_cpu_composite \
        model.init_from="$out/stage13${x}_thin_procedural/model_final.pt" \
        "${thin[@]}" data.crop=160 "train.seed=$3" train.iterations=400 train.ckpt_interval=200 train.keep_last=4
    stage "stage15${x}_thin_real" --config tiny_cpu_composite model.init_from="$out/stage14${x}_thin_crop160/model_final.pt" \
        "${thin[@]}" "train.seed=$4" train.iterations=600 train.ckpt_interval=200 train.keep_last=4 "${real_mix[@]}"
    blend "$out/stage14${x}_thin_crop160/model_final.pt" "$out/stage15${x}_thin_real/model_final.pt" 0.3 \
        "$out/thin_real_blend${x}.pt"
}
thin_seed '' 23 29 21
thin_seed b 31 37 41
thin_seed c 43 47 53
blend "$out/thin_real_blend.pt" "$out/thin_real_blendb.pt" 0.5 "$out/thin_seeds_ab.pt"
blend "$out/thin_seeds_ab.pt" "$out/thin_real_blendc.pt" 0.3333333 "$out/thin_seeds_abc.pt"
# Session 27: stages 11, 11b and 12 again from stage 10 with the thin cue (detail_align_thin=5, the
# same seeds and options otherwise) and their soup blended as the session-18 soup was; the default
# is that thin soup blended 70 % towards the three seeds' average. About 26, 51 and 18 min.
soup_stages thin thin_crop160_real_blend.pt thin_soup.pt "${thin_cue[@]}"
# Session 30: the default runs with the novelty clamp (model card (49)): on quiet frames (mean change
# up to 1 grey level, fading out by 1.6) the change is limited to what is new against the two
# earlier frames aligned onto the frame. It adds no weights.
blend "$out/thin_soup.pt" "$out/thin_seeds_abc.pt" 0.7 "$out/default_tiny.pt" --set novelty_clamp=1.0
if [ "${DRY_RUN:-0}" != 1 ]; then
    echo "[train_default] wrote $out/default_tiny.pt; evaluate it with:"
    echo "  $run eval --suite generalisation --model $out/default_tiny.pt --out out/eval/suite"
fi
