# The full study's variants beside its main study, each the --set options that make it: one place, read by the
# scripts that run a variant (run_public_teacher.sh, run_vit_pair.sh) and by write_findings.sh (VARIANT=...), so the
# runs and the findings cannot name different configs.
# shellcheck disable=SC2034
PUBLIC_TEACHER_SETS="--set teacher_model=published:resnet56 --set scenarios=iid,dirichlet:0.1"
VIT_PAIR_SETS="--set student_model=vit-small"
