module vk-operator.local/devcluster/pause

go 1.22
