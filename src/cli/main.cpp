#include <cstdio>

int main() { std::puts("mithril: work in progress"); return 0; }
