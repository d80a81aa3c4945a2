# The full study's variants beside its main study, each the --set options that make it: one place, read by the
# scripts that run a variant (run_study.sh, run_public_teacher.sh, run_vit_pair.sh, run_queue.sh), by
# write_findings.sh (VARIANT=...) and by progress.sh, so the runs, the findings and the progress report cannot name
# different configs.
# shellcheck disable=SC2034
PUBLIC_TEACHER_SETS="--set teacher_model=published:resnet56 --set scenarios=iid,dirichlet:0.1"
VIT_PAIR_SETS="--set student_model=vit-small"
# the union reference rows: fine-tuning and DP-KD (both settings) on both parties' data
UNION_SETS="--set transfer=union --set methods=finetune,dp,dp_shared"
# the federated claim's starts (the queue's first pass): FedAvg from scratch and from the two KD-consolidated starts
FEDERATED_CLAIM_STARTS="random,kd_avg,kd_dp"
