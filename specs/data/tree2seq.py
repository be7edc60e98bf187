"""Writes tree2seq.tsv, the data of specs/tree2seq.sg: random binary trees over eight
words, each with its leaves in reverse order (the tree's mirror image read as a
sentence). Run from this folder: python tree2seq.py > tree2seq.tsv"""
import random

WORDS = "cat dog fox owl bee ant elk yak".split()


def tree(rng, leaves):
    """A random binary tree with `leaves` leaves, labelled 2 at every node (trees are
    read as the Sentiment Treebank writes them; the labels are not fed), and its words."""
    if leaves == 1:
        w = rng.choice(WORDS)
        return f"(2 {w})", [w]
    k = rng.randint(1, leaves - 1)
    left, lw = tree(rng, k)
    right, rw = tree(rng, leaves - k)
    return f"(2 {left} {right})", lw + rw


def main(n=600, seed=0):
    rng = random.Random(seed)
    for _ in range(n):
        text, words = tree(rng, rng.randint(2, 6))
        print(f"{text}\t{' '.join(reversed(words))}")


if __name__ == "__main__":
    main()
