"""`python -m nnlab.course PATH [epochs]`: train and test the faces script (exercise 5) on PATH, without tracking.
`nnlab course run` grades any exercise script with MLflow tracking."""

import sys

from nnlab.course.exercises import exer_5


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m nnlab.course /path/to/faces [epochs]  (the folder with labels.csv, final_files/)")
    train_data, test_data = exer_5.load_train(argv[0]), exer_5.load_test(argv[0])
    model = exer_5.train_model(exer_5.create_model((*exer_5.IMAGE_SIZE, 3)), train_data, test_data,
                               epochs=int(argv[1]) if len(argv) > 1 else 20)
    print(f"test MAE: {model.evaluate(test_data, verbose=0, return_dict=True)['mae']:.2f} years")


if __name__ == "__main__":
    main(sys.argv[1:])
