#!/usr/bin/env bash
# The public-teacher scenario at full scale: the teacher is the published CIFAR-10 ResNet-56 from ../shared/pretrained
# (checked against the SHA-256 prefix in its file name), the student the study's resnet8 pre-trained on its own
# partition as in the main study; every method, under iid and dirichlet:0.1, seed by seed, into this folder's store
# (resumable). The published teacher was trained by others on all 50,000 original CIFAR-10 training images.
#
#   bash figures/full/run_public_teacher.sh [FIRST_SEED] [LAST_SEED]      # default 0 9
source "$(dirname "$0")/variants.sh"
MAIN_SETS="$PUBLIC_TEACHER_SETS" UNION=0 exec bash "$(dirname "$0")/run_study.sh" "$@"
