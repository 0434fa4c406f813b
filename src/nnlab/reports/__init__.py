"""Reports read from a store: comparison tables of sweeps and experiments (`report`), the course's lab index
(`labindex`) and one lab's report (`labreport`)."""
