"""nnlab's scripts for the course's five exercises, in the platform's shape: `load_train(path)`, `load_test(path)`,
`create_model(input_shape)`, `train_model(model, train_data, test_data, ...)`. `nnlab course init exer_N DEST` copies
one out; `nnlab course run SCRIPT DATA_PATH` grades it the platform's way (the table of bars: nnlab.course.labs)."""
