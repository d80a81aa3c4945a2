#!/usr/bin/env bash
# The heterogeneous pair at full scale: the study's resnet20 teacher (a CNN) and a ViT student, kdlib's vit-small
# (patch 4, hidden 128, 4 layers, 546,186 parameters; benchmarks/README.md measured its size against the others),
# pre-trained on its own partition; every method on every scenario, seed by seed, into this folder's store
# (resumable). On this 2-core CPU the ViT costs 5-8x ResNet-8's time per epoch, so it is meant for a lent GPU
# (run_device.sh runs it there).
#
#   bash figures/full/run_vit_pair.sh [FIRST_SEED] [LAST_SEED]      # default 0 9
source "$(dirname "$0")/variants.sh"
MAIN_SETS="$VIT_PAIR_SETS" UNION=0 exec bash "$(dirname "$0")/run_study.sh" "$@"
