"""Reports read from a store: comparison tables of sweeps and experiments (`report`), the best job a sweep's parent
run carries (`best`), how tables look in each format (`render`), the course's lab index (`labindex`) and one lab's
report (`labreport`)."""
